"""MagCache's magnitude ratios, calibrated by the harness for the model and preset it measures.

diffusers ships MagCache ratios for Flux only; Wan's must be measured, and they hold for one step count,
schedule and length at a time (users' most common complaint about caches). So the first generation that
asks for MagCache with a (weights, worker, dtype, quantization, solver, steps, shift, guidance, guidance
passes, shape) the harness has no ratios for runs once in full with ``MagCacheConfig(calibrate=True)``;
the ratios it reports (the conditional pass's) are saved as JSON beside the reference videos, under the
same key discipline, and reused. A calibration is one extra full generation, reported as
``time_calibration_s``, never as generation time.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from harness.atomic import save_text
from harness.pipeline.generate import GenerationRequest, generate
from harness.pipeline.load import LoadedPipeline


@dataclass(frozen=True)
class Calibration:
    """A request's MagCache ratios, and what getting them cost now (0 when they were on disk)."""

    ratios: tuple[float, ...]
    seconds: float
    key: str


class MagCacheRatios:
    """MagCache ratios on disk (``magcache-<key>.json``), calibrated on first use."""

    def __init__(self, folder: Path, loaded: LoadedPipeline, solvers: Mapping[str, Any]):
        self.folder, self.loaded, self.solvers = folder, loaded, solvers

    def key(self, request: GenerationRequest) -> str:
        """What the ratios depend on: everything that moves the sampling trajectory or the transformer."""
        speed = request.speed
        parts = {
            "weights": self.loaded.weights, "model": self.loaded.source, "dtype": str(self.loaded.dtype),
            "device": self.loaded.device.type, "worker": request.worker.params(), "quant": speed.quant,
            "precision": speed.precision, "cfg": speed.cfg, "guidance_stop": speed.guidance_stop,
            "sampler": [request.steps, request.solver, request.shift, request.guidance],
            "shape": list(request.shape.generated), "text_length": request.max_sequence_length,
        }  # fmt: skip
        return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]

    def get(self, request: GenerationRequest) -> Calibration:
        """The ratios for a MagCache request, calibrated now when none are stored."""
        key = self.key(request)
        path = self.folder / f"magcache-{key}.json"
        if path.exists():
            return Calibration(tuple(json.loads(path.read_text())["ratios"]), 0.0, key)
        started = time.perf_counter()
        measured = generate(self.loaded, replace(request, mag_ratios=None), self.solvers).mag_ratios
        seconds = time.perf_counter() - started
        if not measured:
            raise RuntimeError("MagCache calibration reported no ratios (diffusers' MagCache log format changed?)")
        save_text(json.dumps({"ratios": measured, "seconds": seconds, "steps": request.steps}), path)
        return Calibration(tuple(measured), seconds, key)
