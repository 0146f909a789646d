"""How long a bad input takes to be refused: the wall time of the real CLI, from start to its one line.

Each bad setting is given to a fresh ``python -m harness.<command>`` process (interpreter start,
Hydra's composition and the checks included) several times; the median over all of them is
printed, with each input's own median. The goal is under 2 s: the checks run before torch,
diffusers and MLflow are imported (importing torch and diffusers alone took 9 of the 10 s a
bad ``preset.size`` used to take).

    python benchmarks/refusal_time.py              # 3 rounds
    python benchmarks/refusal_time.py 5
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAD_INPUTS = [
    ("run", "preset.size=12"),
    ("run", "preset.sample_shift=1e308"),
    ("run", "preset.sample_guide_scale=1e308"),
    ("run", "preset.sample_steps=0"),
    ("run", "tracking.uri=garbage://x"),
    ("run", "paths.cache_dir=/proc/harness-cache"),
    ("run", "model=wan2.1-t2v-1.3b model.path=/nowhere/wan"),
    ("run", "speed.quant=float8_dynamic"),  # model=tiny runs on the CPU
    ("search", "search.floors.psnr_db.value=nan"),
    ("search", "search.study_name=a/b"),
    ("search", "search.storage=redis://x/y"),
    ("report", "study=a/b"),
    ("select", "search.select.noise=abc"),
    ("audit", "audit.steps=[0]"),
]


def refusal_s(root: Path, command: str, overrides: str) -> float:
    """Seconds from starting the command to its exit; it must refuse (exit 1, one ``error:`` line)."""
    arguments = [f"paths.root_dir={root}", "model=tiny", "prompts=smoke", *overrides.split()]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", f"harness.{command}", *arguments],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    elapsed = time.perf_counter() - started
    if result.returncode != 1 or not result.stderr.strip().startswith("error: "):
        raise SystemExit(f"{command} {overrides} was not refused in one line: {result.stderr[-500:]}")
    return elapsed


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        times: dict[str, list[float]] = {f"{c} {o}": [] for c, o in BAD_INPUTS}
        for _ in range(rounds):  # rounds interleaved, so a burst of machine load touches every input alike
            for command, overrides in BAD_INPUTS:
                times[f"{command} {overrides}"].append(refusal_s(Path(folder), command, overrides))
    for name, seconds in times.items():
        print(f"{statistics.median(seconds):6.2f} s  {name}")
    every = [s for seconds in times.values() for s in seconds]
    print(f"median time to refuse a bad input: {statistics.median(every):.2f} s over {len(every)} refusals "
          f"({len(BAD_INPUTS)} inputs x {rounds} rounds; slowest {max(every):.2f} s; goal < 2 s)")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
