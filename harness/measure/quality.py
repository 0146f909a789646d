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


def match_reference(frames: np.ndarray, reference_shape: tuple[int, ...]) -> np.ndarray:
    """A video resampled to the reference's frames and size, so fidelity sees what it lost.

    In time by position: reference frame ``j`` (at ``j / fps``) is compared with the
    candidate's frame at the same time; a shorter video holds its last frame for the time it
    does not cover. In space by bicubic resampling (antialiased when shrinking).

    Args:
        frames: uint8 (F, H, W, 3).
        reference_shape: the reference's (F, H, W, 3).

    Returns:
        uint8 of ``reference_shape`` (``frames`` itself when the shapes match).
    """
    if frames.shape == tuple(reference_shape):
        return frames
    count, height, width = reference_shape[:3]
    picked = frames[np.minimum(np.arange(count), len(frames) - 1)]
    if picked.shape[1:3] == (height, width):
        return picked
    tensor = torch.from_numpy(picked).permute(0, 3, 1, 2).float()
    shrink = height < picked.shape[1] or width < picked.shape[2]
    resized = torch.nn.functional.interpolate(
        tensor, size=(height, width), mode="bicubic", align_corners=False, antialias=shrink
    )
    return resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


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
