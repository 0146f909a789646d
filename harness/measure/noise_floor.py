"""The fidelity noise floor: how far the baseline's video is from itself under changes that should not matter.

Another attention kernel, batched guidance, or bfloat16 weights compute (nearly) the same function, yet their
pixels differ by float rounding. Nobody publishes that distance for Wan; without it a PSNR floor has no scale.
``harness.audit`` measures it (the baseline's video, first prompt and seed, under each change, against the
plain video) and keeps it beside the reference videos, keyed by the weights, device, dtype and worker; every
fidelity floor is then printed with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.atomic import save_text
from harness.measure.quality import fidelity
from harness.pipeline.device import CPU_ATTENTION, CUDA_ATTENTION, check_attention
from harness.pipeline.generate import generate
from harness.pipeline.levers import Speed


def variants(device_type: str) -> dict[str, Speed]:
    """The changes measured: batched guidance, each attention backend this device runs, bfloat16 weights."""
    found = {"cfg=batched": Speed(cfg="batched"), "precision=bfloat16": Speed(precision="bfloat16")}
    for backend in CPU_ATTENTION if device_type == "cpu" else CUDA_ATTENTION:
        if backend != "native":
            found[f"attention={backend}"] = Speed(attention=backend)
    return found


def _path(folder: Path, session: Any, plan_: Any) -> Path:
    loaded = session.loaded
    parts = [loaded.weights, loaded.source, loaded.device.type, str(loaded.dtype), plan_.worker.params()]
    return folder / f"noise-floor-{hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]}.json"


def measure(cfg: Any, plan_: Any, session: Any, psnr_cap_db: float) -> dict[str, dict[str, float]]:
    """The baseline's fidelity to itself under each change (the changes this device cannot run are left out).

    Returns:
        change -> ``{"psnr_db", "ssim"}``, also saved for :func:`scale` to print beside the floors.
    """
    from harness.pipeline.load import load_pipeline

    request = plan_.request(plan_.prompts[0], plan_.seeds[0])
    plain = generate(session.loaded, request, session.solvers).frames
    found = {}
    for name, speed in variants(session.loaded.device.type).items():
        try:
            check_attention(speed.attention, session.loaded.device)
        except ValueError:  # a kernel whose package is missing here
            continue
        loaded = load_pipeline(cfg.model, plan_.worker, speed)
        frames = generate(loaded, replace(request, speed=speed), session.solvers).frames
        found[name] = fidelity(frames, plain, psnr_cap_db)
    save_text(json.dumps(found, indent=1), _path(Path(cfg.paths.cache_dir) / "references", session, plan_))
    return found


def scale(cfg: Any, session: Any, plan_: Any) -> str:
    """``noise floor: cfg=batched 58.1 dB, precision=bfloat16 41.2 dB`` when the audit measured it, else ``""``."""
    path = _path(Path(cfg.paths.cache_dir) / "references", session, plan_)
    if not path.exists():
        return ""
    found = json.loads(path.read_text())
    return "noise floor (the baseline against itself): " + ", ".join(
        f"{name} {value['psnr_db']:.1f} dB" for name, value in found.items()
    )
