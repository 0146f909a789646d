"""The default search generating for real beside a bursty CPU load, on the search-cost grid's space.

Replays (``search_cost.py``) charge each video the seconds the grid measured on a quiet machine; a real
study on a shared machine measures its trials under whatever load comes and goes. Here, for a few sampler
seeds, a real study runs (``harness.search``'s own code: the toy world, the real ``WanPipeline``, scoring,
MLflow and an Optuna SQLite store) over the ``grid`` space at the baseline's output, enqueueing only the
baseline as the replays do, while busy processes on every core switch on and off on a random schedule. Per
seed it reports whether the study's best feasible preset (as the harness ranks it) comes within 10% of the
grid's best (as the grid judges it), after how many trials and what share of the grid's generation-seconds
(the grid's own seconds for every video the study generated, as a replay counts them), beside the same
seed replayed on the grid:

    python benchmarks/search_under_load.py                 # 3 seeds, 30 trials each; about 10 min on 2 cores
    python benchmarks/search_under_load.py --seeds 5 --trials 40

Writes ``experiments/search-cost/under-load.md`` and ``under-load.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from search_cost import OUT, grid_path
from search_grid import SPACES, distributions, key
from search_replay import Grid, Strategy, replay

from harness.study.engine.compose import compose_config
from harness.study.engine.floors import fastest_feasible, floors
from harness.study.engine.optimize import search_presets
from harness.study.engine.pruning import load_rules

ROOT = Path(__file__).resolve().parents[1]
HOG = "while True:\n    pass\n"


class BurstyCpuLoad:
    """Two busy processes per core, all let run for 0.3-2 s, then stopped for 0.3-2 s, on a seeded schedule."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.hogs: list[subprocess.Popen] = []
        self.on_s = self.off_s = 0.0
        self.done = threading.Event()

    def __enter__(self) -> "BurstyCpuLoad":
        self.hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(2 * (os.cpu_count() or 1))]
        self.thread = threading.Thread(target=self._switch, daemon=True)
        self.thread.start()
        return self

    def _switch(self) -> None:
        running = True
        while not self.done.is_set():
            burst = self.rng.uniform(0.3, 2.0)
            self._signal(signal.SIGCONT if running else signal.SIGSTOP)
            self.done.wait(burst)
            if running:
                self.on_s += burst
            else:
                self.off_s += burst
            running = not running

    def _signal(self, number: int) -> None:
        for hog in self.hogs:
            os.kill(hog.pid, number)

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        for hog in self.hogs:
            hog.kill()
            hog.wait()

    @property
    def duty(self) -> float:
        """The share of the time the load ran."""
        return self.on_s / max(self.on_s + self.off_s, 1e-9)


def real_study(seed: int, trials: int, folder: Path) -> optuna.Study:
    """A real study of the default search over the grid's space, from the baseline, under the bursty load."""
    overrides = [
        f"paths.root_dir={folder}", "model=toy", f"search.n_trials={trials}", f"search.sampler.seed={seed}",
        "search.enqueue=[baseline]", "search.drift_check=false", f"search.study_name=under-load-{seed}",
    ]  # fmt: skip
    cfg = compose_config(overrides)
    cfg.search.space = OmegaConf.create(SPACES["grid"])
    return search_presets(cfg, overrides)


def outcome(study: optuna.Study, grid: Grid, target: float) -> dict:
    """When the study's best feasible preset came within the target, and what its videos cost on the grid."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    spent, reached = 0.0, None
    for index, trial in enumerate(trials):
        videos = len((trial.user_attrs.get("video_scores") or {}).get("wall_time_s", []))
        preset = grid.presets[key(trial.params)]
        spent += sum(v["wall_time_s"] for v in preset["videos"][:videos])
        best = fastest_feasible(trials[: index + 1])
        if reached is None and best is not None and grid.judged(grid.presets[key(best.params)]) <= target:
            reached = {"trials": index + 1, "spent_share": spent / grid.total_s}
    best = fastest_feasible(trials)
    return {"reached": reached, "best": None if best is None else best.params, "trials": len(trials)}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--budget", type=float, default=0.03)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    cfg = compose_config(["model=toy"])
    grid = Grid(json.loads(grid_path(OUT, "grid").read_text()), floors(cfg), key)
    target = 1.10 * grid.best_s
    default = Strategy("default", str(cfg.search.sampler.type), load_rules(cfg))
    rows = []
    for seed in range(args.seeds):
        folder = ROOT / "outputs" / "bench-under-load" / f"seed{seed}"
        started = time.perf_counter()
        with BurstyCpuLoad(seed) as load:
            study = real_study(seed, args.trials, folder)
        quiet = replay(grid, distributions(cfg), default, seed, 2 * args.budget * grid.total_s, args.trials)
        quiet_at = next((i for i, b in enumerate(quiet.best) if b is not None and b <= target), None)
        rows.append({"seed": seed, "loaded": outcome(study, grid, target), "duty": load.duty,
                     "wall_s": time.perf_counter() - started, "load_average": os.getloadavg()[0],
                     "quiet_replay": None if quiet_at is None else {
                         "trials": quiet_at + 1, "spent_share": quiet.spent[quiet_at] / grid.total_s}})  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "under-load.json").write_text(json.dumps({"target_s": target, "rows": rows}, indent=1))
    (args.out / "under-load.md").write_text(report(rows, grid, target, args))
    print(report(rows, grid, target, args))


def _cell(found: dict | None, budget: float) -> str:
    if found is None:
        return "not reached"
    late = "" if found["spent_share"] <= budget else " (past the budget)"
    return f"{found['spent_share']:.2%} ({found['trials']} trials){late}"


def report(rows: list[dict], grid: Grid, target: float, args: argparse.Namespace) -> str:
    loaded = sum(r["loaded"]["reached"] is not None and r["loaded"]["reached"]["spent_share"] <= args.budget
                 for r in rows)  # fmt: skip
    quiet = sum(r["quiet_replay"] is not None and r["quiet_replay"]["spent_share"] <= args.budget for r in rows)
    lines = [
        "# The default search under a bursty CPU load, generating for real\n",
        f"Made by `python benchmarks/search_under_load.py --seeds {args.seeds} --trials {args.trials}` (see its "
        f"docstring). Target: a best feasible preset within 10% of the `grid`'s best ({target:.3f} s, as the grid "
        f"judges it), within {args.budget:.0%} of the grid's generation-seconds.\n",
        f"Reached: **{loaded}/{len(rows)}** seeds under the load, against {quiet}/{len(rows)} replayed on the quiet "
        f"grid.\n",
        "| seed | under the load: spent (trials) | load on | wall time | quiet replay: spent (trials) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['seed']} | {_cell(r['loaded']['reached'], args.budget)} | {r['duty']:.0%} of the time "
                     f"| {r['wall_s'] / 60:.1f} min | {_cell(r['quiet_replay'], args.budget)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
