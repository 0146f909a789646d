"""The GPU audit's dry run: every section of benchmarks/gpu_audit.py on the tiny model, on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_audit_dry_run_exercises_every_section(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_audit.py"), "--dry-run", "--out", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for section in ("passes", "presets", "levers", "overhead"):
        assert not {"skipped", "failed"} & set(results[section]), (section, results[section])
    assert {row["attention"] for row in results["passes"]["rows"]} == {"native", "_native_math"}
    assert len(results["presets"]) == 8 and "combined (batched, bf16, best attention, regional compile)" in results[
        "levers"]  # fmt: skip
    report = (tmp_path / "report.md").read_text()
    assert (
        "Dry run: the tiny model on a CPU" in report and "## d. The harness against a plain WanPipeline call" in report
    )
    assert (tmp_path / "passes.png").stat().st_size > 5000 and (tmp_path / "log.txt").read_text()


def test_a_pass_of_the_published_architecture_counts_283_tflop():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_audit import pass_flops

    class Config:
        num_attention_heads, attention_head_dim, ffn_dim, num_layers = 12, 128, 8960, 30

    class Transformer:
        config = Config

    assert pass_flops(Transformer, 32760, 512) / 1e12 == pytest.approx(283, abs=1)


def test_a_section_that_does_not_fit_the_budget_is_skipped_and_said():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_audit import Budget

    said = []
    budget = Budget(5, said.append)
    assert budget.run("c. levers", 60, lambda: 1 / 0) == {"skipped": "5 s left of the budget, needed about 60 s"}
    assert budget.run("d. overhead", 1, lambda: 1 / 0)["failed"].startswith("ZeroDivisionError")
    assert said[0] == "c. levers: skipped (5 s left, it needs about 60 s)"
