"""Reference videos: the baseline's own video for a prompt and seed, cached on disk.

The reference is what the user makes today: the baseline's sampler (steps, solver, shift,
guidance) at the baseline's size and frame count. A candidate at another size or length is
scored against it after resampling (``harness.measure.quality.match_reference``). A
reference is generated once per model weights, device, dtype, text length, prompt, seed and
shape, and reused by every run and trial that scores against it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness.atomic import save_array
from harness.pipeline.generate import GenerationRequest, generate
from harness.pipeline.levers import Speed
from harness.pipeline.load import LoadedPipeline
from harness.preset import Preset, VideoShape

log = logging.getLogger(__name__)


class ReferenceVideos:
    """Reference videos made with the reference preset's sampler, cached on disk."""

    def __init__(
        self,
        folder: Path,
        loaded: LoadedPipeline,
        reference: Preset,
        shape: VideoShape,
        solvers: Mapping[str, Any],
    ):
        """Args:
        folder: cache folder (one ``.npy`` per video).
        loaded: the pipeline that generates the references.
        reference: the preset whose sampler settings define the reference.
        shape: the reference preset's resolved shape (its size and frames).
        solvers: the solver mapping.
        """
        self.folder = folder
        self.loaded = loaded
        self.reference = reference
        self.shape = shape
        self.solvers = solvers

    def request(self, like: GenerationRequest) -> GenerationRequest:
        """The reference's request for a video: same prompt and seed, the reference's sampler
        and shape, and no speed lever (a lever's video is scored against the plain sampler's)."""
        return replace(
            like,
            shape=self.shape,
            steps=self.reference.sample_steps,
            guidance=self.reference.sample_guide_scale,
            solver=self.reference.sample_solver,
            shift=self.reference.sample_shift,
            speed=Speed(),
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
            "text_length": request.max_sequence_length,
            "shape": [request.shape.width, request.shape.height, request.shape.num_frames],
            "sampler": [request.steps, request.solver, request.shift, request.guidance],
            "worker": request.worker.params(),  # its schedule, noise, passes, precision and pixels make another video
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
        save_array(frames, path)  # atomic, and safe when two workers write the same reference
        return frames
