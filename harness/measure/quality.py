"""Quality of a video: CLIP score against its prompt, fidelity to a reference video.

CLIP score of a video is the mean over its frames of torchmetrics' ``CLIPScore`` (100 x
cosine, floored at 0). Fidelity is PSNR and SSIM against the video the reference
sampler (the baseline's steps, solver, shift and guidance) makes at the same size,
frames, prompt and seed (``harness.measure.references``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from torchmetrics.multimodal.clip_score import CLIPScore

from harness.pipeline.load import load_clip
from harness.preset import Preset


def _as_float_frames(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


class ClipScorer:
    """CLIP score of videos against text, with the CLIP model the model config names."""

    def __init__(self, model: Mapping[str, Any]):
        """Load the CLIP model (once per process).

        Args:
            model: the ``model`` node; ``clip`` is a hub id or a local folder.
        """
        clip_and_processor = load_clip(model)
        self.metric = CLIPScore(model_name_or_path=lambda: clip_and_processor)

    def score(self, frames: np.ndarray, text: str) -> float:
        """Mean CLIP score of the frames against the text.

        Args:
            frames: uint8 (F, H, W, 3).
            text: the prompt (CLIP truncates it at 77 tokens).

        Returns:
            The score, 0 to 100.
        """
        images = torch.from_numpy(frames).permute(0, 3, 1, 2)
        self.metric.reset()
        with torch.inference_mode():
            value = self.metric(images, [text] * len(images))
        return float(value)


def fidelity(frames: np.ndarray, reference: np.ndarray, psnr_cap_db: float = 100.0) -> dict[str, float]:
    """PSNR and SSIM of a video against a reference of the same shape.

    Args:
        frames: uint8 (F, H, W, 3).
        reference: uint8 (F, H, W, 3).
        psnr_cap_db: reported for identical videos (their PSNR is infinite).

    Returns:
        ``{"psnr_db": ..., "ssim": ...}``.

    Raises:
        ValueError: shapes differ.
    """
    if frames.shape != reference.shape:
        raise ValueError(f"video shape {frames.shape} differs from the reference's {reference.shape}")
    preds, target = _as_float_frames(frames), _as_float_frames(reference)
    psnr = float(peak_signal_noise_ratio(preds, target, data_range=1.0))
    ssim = float(structural_similarity_index_measure(preds, target, data_range=1.0))
    return {"psnr_db": min(psnr, psnr_cap_db), "ssim": ssim}


def same_sampler(preset: Preset, reference: Preset) -> bool:
    """Whether a preset samples exactly as the reference does (its video is the reference)."""
    return (
        preset.sample_steps == reference.sample_steps
        and preset.sample_solver == reference.sample_solver
        and preset.sample_shift == reference.sample_shift
        and preset.sample_guide_scale == reference.sample_guide_scale
    )
