"""The exhaustive grid behind the search-cost benchmark: every preset of a discrete space, measured.

Each preset is generated on every prompt x seed at the baseline's output spec, through the
harness's own measuring code (the real ``WanPipeline``, the CLIP scorer, fidelity to the
baseline's video), timed as ``harness.run`` times it. The grid is written to JSON as it
grows (an interrupted build resumes) and reused while its spec (model weights, machine,
prompts, space) is unchanged.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from harness.measure.plan import Plan, plan
from harness.measure.session import Session, measure_video, open_session, score_video
from harness.pipeline.device import device_label
from harness.study.engine import space

# The benchmark's spaces, in ``search.space`` form, each with the baseline (25 unipc, shift 5, guidance 6.5):
# "grid" 8 x 3 x 8 x 6 = 1,152 presets; "wide", another discretisation the harness was not tuned on,
# 9 x 3 x 7 x 9 = 1,701 presets. Under worker=official guidance <= 1 runs both passes too.
SPACES = {
    "grid": {
        "sample_steps": {"type": "int", "low": 4, "high": 25, "step": 3},
        "sample_solver": {"type": "categorical", "choices": ["unipc", "dpm++", "euler"]},
        "sample_shift": {"type": "float", "low": 1.0, "high": 8.0, "step": 1.0},
        "sample_guide_scale": {"type": "float", "low": 0.5, "high": 8.0, "step": 1.5},
    },
    "wide": {
        "sample_steps": {"type": "int", "low": 9, "high": 25, "step": 2},
        "sample_solver": {"type": "categorical", "choices": ["unipc", "dpm++", "euler"]},
        "sample_shift": {"type": "float", "low": 2.0, "high": 8.0, "step": 1.0},
        "sample_guide_scale": {"type": "float", "low": 2.0, "high": 8.0, "step": 0.75},
    },
}
SPACE = SPACES["grid"]
KEYS = tuple(SPACE)  # the searched keys, the same in every space
SAVE_EVERY = 25  # presets between writes of the growing grid
MACHINE = ("device", "threads")  # another machine replays a stored grid as it was measured


def distributions(cfg: DictConfig, name: str = "grid") -> dict[str, optuna.distributions.BaseDistribution]:
    """A space as the harness's own Optuna distributions."""
    return space.distributions(SPACES[name], OmegaConf.to_container(cfg.solver, resolve=True))


def values(dist: optuna.distributions.BaseDistribution) -> list[Any]:
    """Every value a discrete distribution holds."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return list(dist.choices)
    count = round((dist.high - dist.low) / dist.step) + 1
    kind = int if isinstance(dist, optuna.distributions.IntDistribution) else float
    return [kind(round(dist.low + i * dist.step, 6)) for i in range(count)]


def key(params: dict[str, Any]) -> str:
    """A preset's key in the grid: its searched values, in the space's order."""
    return " ".join(f"{name}={params[name]}" for name in KEYS)


def spec(session: Session, plan_: Plan, name: str) -> dict[str, Any]:
    """What the grid's numbers depend on: a stored grid is reused only under the same spec."""
    return {
        "worker": plan_.worker.params(),
        "model": session.loaded.name,
        "weights": session.loaded.weights,
        "device": device_label(session.loaded.device),
        "threads": plan_.threads,
        "prompts": list(plan_.prompts),
        "seeds": list(plan_.seeds),
        "output_spec": plan_.shape.output_spec(plan_.fps),
        "space": SPACES[name],
        "baseline": plan_.reference.to_worker(),
    }


def build(cfg: DictConfig, path: Path, rebuild: bool, name: str = "grid") -> dict[str, Any]:
    """The grid of space ``name`` at ``path``: reused, resumed or built.

    Raises:
        ValueError: a stored grid measured under another spec (use ``--rebuild``).
    """
    plan_ = plan(cfg)
    session = open_session(cfg, plan_)
    wanted = spec(session, plan_, name)
    grid = {"spec": wanted, "presets": {}}
    if path.exists() and not rebuild:
        stored = json.loads(path.read_text())
        changed = sorted(k for k in wanted if stored["spec"].get(k) != wanted[k])
        if set(changed) - set(MACHINE):
            raise ValueError(f"grid {path} was measured with other {changed}; pass --rebuild to measure it again")
        if changed:
            where = ", ".join(f"{k} {stored['spec'][k]!r}" for k in changed)
            print(f"replaying the grid as measured on {where} (--rebuild measures it on this machine)")
            wanted = stored["spec"]
        grid = stored
    todo = _todo(cfg, plan_, grid, name)
    if todo:
        _measure(cfg, plan_, session, grid, todo, path)
    return grid


def _todo(cfg: DictConfig, plan_: Plan, grid: dict, name: str) -> list[dict[str, Any]]:
    """Presets not yet measured: the baseline first (every other video is scored against it), the rest shuffled
    so that a drift of the machine's speed is not mistaken for an effect of one knob."""
    dists = distributions(cfg, name)
    every = [dict(zip(dists, combo)) for combo in itertools.product(*(values(d) for d in dists.values()))]
    baseline = {key_: plan_.reference.to_worker()[key_] for key_ in KEYS}
    rest = [p for p in every if p != baseline]
    random.Random(0).shuffle(rest)
    return [p for p in [baseline, *rest] if key(p) not in grid["presets"]]


def _measure(cfg: DictConfig, plan_: Plan, session: Session, grid: dict, todo: list[dict], path: Path) -> None:
    print(f"measuring {len(todo)} preset(s) x {len(plan_.prompts) * len(plan_.seeds)} video(s) into {path}")
    grid.setdefault("load_average", []).append(round(os.getloadavg()[0], 2))
    for count, params in enumerate(tqdm(todo, desc="grid", unit="preset"), start=1):
        grid["presets"][key(params)] = _preset(cfg, plan_, session, params)
        if count % SAVE_EVERY == 0 or count == len(todo):
            _save(grid, path)
    grid["load_average"].append(round(os.getloadavg()[0], 2))
    grid["measured_at"] = time.strftime("%Y-%m-%d")  # the grid's date, not a replay's
    _save(grid, path)


def _preset(cfg: DictConfig, plan_: Plan, session: Session, params: dict[str, Any]) -> dict[str, Any]:
    """One preset's videos: wall time and scores of each prompt x seed."""
    preset = replace(plan_.preset, **params)
    one = replace(plan_, preset=preset, name=key(params))
    videos = []
    for prompt, seed in itertools.product(one.prompts, one.seeds):
        request = one.request(prompt, seed)
        session.warm_up(session.loaded, request, one.warmup_steps)
        runs = measure_video(session.loaded, request, one.repeats, session.solvers)
        scores, _ = score_video(cfg, one, session, request, runs[0].frames)
        seconds = statistics.median(r.wall_s for r in runs)
        videos.append({"wall_time_s": seconds, **{m: scores[m] for m in ("clip_score", "psnr_db")}})
    request = one.request(one.prompts[0], one.seeds[0])
    tokens = session.loaded.latent_grid(*one.shape.generated)[1]
    return {"params": params, "steps": request.steps, "calls": request.steps + request.guided_steps,
            "tokens": tokens, "videos": videos}  # fmt: skip


def _save(grid: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(grid, indent=None, separators=(",", ":")))
    os.replace(partial, path)  # atomic: an interrupted build leaves the last complete write


def summary(grid: dict[str, Any]) -> dict[str, Any]:
    """Grid totals: presets, videos and their generation-seconds; when and under what load they were measured."""
    walls = [v["wall_time_s"] for p in grid["presets"].values() for v in p["videos"]]
    return {"presets": len(grid["presets"]), "videos": len(walls), "seconds": float(np.sum(walls)),
            "measured_at": grid.get("measured_at", "unknown"),
            "load_average": grid.get("load_average", [])}  # fmt: skip
