"""Quality of a video: CLIP score against its prompt, fidelity to a reference video.

CLIP score of a video is the mean over its frames of torchmetrics' ``CLIPScore`` (100 x
cosine, floored at 0). Fidelity is PSNR and SSIM against the video the reference
sampler (the baseline's steps, solver, shift and guidance) makes at the same size,
frames, prompt and seed; references are generated once and cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from torchmetrics.multimodal.clip_score import CLIPScore

from harness.pipeline.generate import GenerationRequest, generate
from harness.pipeline.load import LoadedPipeline, load_clip
from harness.preset import Preset

log = logging.getLogger(__name__)


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


class ReferenceVideos:
    """Reference videos made with the reference preset's sampler, cached on disk."""

    def __init__(
        self,
        folder: Path,
        loaded: LoadedPipeline,
        reference: Preset,
        solvers: Mapping[str, Any],
    ):
        """Args:
        folder: cache folder (one ``.npy`` per video).
        loaded: the pipeline that generates the references.
        reference: the preset whose sampler settings define the reference.
        solvers: the solver mapping.
        """
        self.folder = folder
        self.loaded = loaded
        self.reference = reference
        self.solvers = solvers

    def request(self, like: GenerationRequest) -> GenerationRequest:
        """The reference's request for a video: same shape, prompt and seed."""
        return GenerationRequest(
            prompt=like.prompt,
            negative_prompt=like.negative_prompt,
            seed=like.seed,
            shape=like.shape,
            steps=self.reference.sample_steps,
            guidance=self.reference.sample_guide_scale,
            solver=self.reference.sample_solver,
            shift=self.reference.sample_shift,
        )

    def _path(self, request: GenerationRequest) -> Path:
        key = {
            "model": self.loaded.source,
            "weights": self.loaded.weights,  # a retrained model at the same path has new references
            "dtype": str(self.loaded.dtype),
            "device": self.loaded.device.type,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "shape": [request.shape.width, request.shape.height, request.shape.num_frames],
            "sampler": [request.steps, request.solver, request.shift, request.guidance],
        }
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return self.folder / f"{digest}.npy"

    def get(self, like: GenerationRequest, own_frames: np.ndarray | None = None) -> np.ndarray:
        """The reference video for a request, generated once.

        Args:
            like: the request being scored.
            own_frames: that request's video, stored as the reference when its sampler
                is the reference's (it is then its own reference).

        Returns:
            uint8 (F, H, W, 3).
        """
        request = self.request(like)
        path = self._path(request)
        if path.exists():
            return np.load(path)
        self.folder.mkdir(parents=True, exist_ok=True)
        if own_frames is not None:
            frames = own_frames
        else:
            log.info("generating the reference video (%d steps %s)", request.steps, request.solver)
            frames = generate(self.loaded, request, self.solvers).frames
        temporary = path.with_suffix(".tmp.npy")
        np.save(temporary, frames)
        temporary.replace(path)  # atomic: a killed run never leaves half a reference
        return frames
