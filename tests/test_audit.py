"""The audit runs on the tiny model and writes a report with the proposal's claims beside measurements."""

import re
from types import SimpleNamespace

import pytest
from conftest import store_client

from harness.cost import sweep as sweep_module
from harness.cost.audit_report import knob_sentence, run_audit
from harness.cost.model import fit_cost_model
from harness.cost.sweep import CLAIMS, Point, Sweep
from harness.measure.plan import plan
from harness.measure.session import open_session


@pytest.mark.slow
def test_audit_reports_claims_cost_model_and_logs_to_mlflow(make_cfg, tmp_path):
    cfg = make_cfg(
        "audit.repeats=1",
        "audit.steps=[2,4,6]",
        "audit.sizes=['480*832']",
        "audit.frames=[83,21]",
        "preset.sample_steps=6",
        "audit.claim_rounds=6",
    )
    report = run_audit(cfg)
    text = report.read_text()
    assert report.parent.name.startswith("audit-")
    for claim in CLAIMS:  # each with its paired interval (audit.claim_rounds: 12 by default, 6 here)
        assert re.search(rf"\| {re.escape(claim)} \| \+{CLAIMS[claim][0]:.0%} \| [+-]\d+\.\d% \[[+-]\d+\.\d%, ", text)
    assert "## Cost model" in text and "median error" in text and "## Stages of the baseline video" in text
    for picture in ("steps.png", "tokens.png"):
        assert (report.parent / picture).stat().st_size > 5000
    client = store_client(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("wan-presets/tiny").experiment_id], "tags.kind = 'audit'")
    assert len(runs) == 1 and "cost_model_median_error" in runs[0].data.metrics
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id, "audit")} >= {
        "audit/report.md",
        "audit/steps.png",
    }


def test_a_knob_s_configurations_are_generated_round_robin_so_drift_slows_them_alike(make_cfg, monkeypatch):
    """Measured one after another, a machine slowing down over minutes would pass for the last ones' cost."""
    cfg = make_cfg("preset.sample_steps=3")
    base_plan = plan(cfg)
    session = open_session(cfg, base_plan)
    order, real = [], sweep_module.generate

    def recording(loaded, request, solvers):
        order.append((request.solver, request.steps))
        return real(loaded, request, solvers)

    monkeypatch.setattr(sweep_module, "generate", recording)
    configs = [("solver=unipc", {"solver": "unipc"}), ("solver=euler", {"solver": "euler"})]
    unipc, euler = Sweep(cfg, base_plan, session, repeats=2).measure_group(configs)
    warm_ups, rounds = order[:2], order[2:]
    assert warm_ups == [("unipc", 2), ("euler", 2)]
    assert rounds == [("unipc", 3), ("euler", 3), ("euler", 3), ("unipc", 3)]  # every other round reversed
    assert (unipc.label, euler.label, unipc.steps) == ("solver=unipc", "solver=euler", 3)
    assert unipc.wall_s > 0 and euler.wall_s > 0


def test_each_claim_is_generated_beside_the_baseline_alternating_which_goes_first(make_cfg, monkeypatch):
    cfg = make_cfg("preset.sample_steps=3")
    base_plan = plan(cfg)
    session = open_session(cfg, base_plan)
    order = []

    def timed_by_steps(loaded, request, solvers):  # a video's seconds: a tenth of its steps, whatever else changed
        order.append((request.solver, request.steps))
        wall = request.steps / 10
        return SimpleNamespace(wall_s=wall, denoise_s=wall, text_encode_s=0.0, decode_s=0.0, step_times=[0.1])

    monkeypatch.setattr(sweep_module, "generate", timed_by_steps)
    baseline, claims, speedups = Sweep(cfg, base_plan, session, repeats=1).claims(rounds=2)
    rounds = order[1 + len(CLAIMS) :]  # after a warm-up of each shape
    assert rounds[:2] == [("unipc", 18), ("unipc", 3)]  # the steps claim (18), then the baseline (3) beside it
    assert rounds[2:4] == [("euler", 3), ("unipc", 3)]  # solver unipc -> euler, then the baseline
    assert rounds[10:12] == [("unipc", 3), ("unipc", 18)]  # the second round: the baseline goes first
    assert len(rounds) == 2 * 2 * len(CLAIMS)
    assert set(speedups) == set(claims) == set(CLAIMS) and all(s.pairs == 2 for s in speedups.values())
    # baseline seconds over the turned knob's: 3 steps against 18 is 6 times slower, not 6 times faster
    assert speedups["steps 25 -> 18"].median == pytest.approx(3 / 18)
    assert speedups["solver unipc -> euler"].median == pytest.approx(1.0)
    assert baseline.wall_s == pytest.approx(0.3) and claims["steps 25 -> 18"].wall_s == pytest.approx(1.8)


def test_guidance_1_runs_both_passes_for_the_official_worker_and_the_audit_says_what_that_saves(make_cfg):
    from dataclasses import replace

    from harness.cost.audit_report import guidance_sentence

    for worker, passes in (("official", 2), ("diffusers", 1)):
        cfg = make_cfg("preset.sample_steps=2", f"worker={worker}")
        base_plan = plan(cfg)
        (unguided,) = Sweep(cfg, base_plan, open_session(cfg, base_plan), repeats=1).measure_group(
            [("guidance=1.0", {"guidance": 1.0})]
        )
        assert unguided.passes == passes, worker
    audit = claims_audit([1.0] * 6, [0.8] * 6)
    same = {"guidance": [replace(point("g1", 0.04), denoise_s=0.98), point("g6.5", 0.04)]}
    sentence = guidance_sentence(replace(audit, points=same, base=base_plan.preset))
    assert sentence.startswith("Guidance 6.5 (2 passes per step) takes 1.000 s of denoising, guidance 1 (2 passes")
    assert "within what this audit resolves (9.0%)" in sentence and "guidance 1 saves no time" in sentence
    fewer = {"guidance": [replace(point("g1", 0.02), passes=1, denoise_s=0.5), point("g6.5", 0.04)]}
    sentence = guidance_sentence(replace(audit, points=fewer, base=base_plan.preset))
    assert "guidance 1 (1 pass per step) 0.500 s: **2.00x**." in sentence and "saves no time" not in sentence


def point(label, step_s):
    return Point(label, 25, 2, 100, 1.0, 1.0, step_s, 0.01, {})


def test_the_audit_says_what_its_numbers_show_not_a_fixed_sentence():
    alike = [point("unipc", 0.100), point("euler", 0.101)]
    apart = [point("unipc", 0.100), point("euler", 0.144)]
    assert knob_sentence("solver", alike, 0.03) == (
        "Solver changes the time per step by at most 1.0%, within what this audit resolves (9.0%, from 3.0% "
        "noise): no measurable cost."
    )
    assert knob_sentence("solver", apart, 0.03) == (
        "Solver changes the time per step by up to 44.0%, more than this audit resolves (9.0%, from 3.0% noise; "
        "euler slowest)."
    )
    assert "no measurable cost" in knob_sentence("shift", apart, 0.50)  # under 50% noise nothing is measurable


def claims_audit(baseline_walls, turned_walls):
    from harness.cost.audit_report import Audit

    def measured(label, walls):
        return Point(label, 25, 2, 100, sorted(walls)[len(walls) // 2], 1.0, 0.04, 0.01, {})

    from harness.measure.pairing import paired_speedup

    claims = {name: measured(name, turned_walls) for name in CLAIMS}
    speedups = {name: paired_speedup(baseline_walls, turned_walls) for name in CLAIMS}
    return Audit("cpu", None, 3, None, {}, measured("baseline", baseline_walls), claims, None, 0.03, 0.1, {}, speedups)


def test_each_claim_s_speed_up_is_paired_round_by_round_with_its_interval():
    from harness.cost.audit_report import claims_table

    # the machine slows down round by round; each round's baseline is 1.25x its turned knob's time
    baseline = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    rows = claims_table(claims_audit(baseline, [b / 1.25 for b in baseline]))
    first = rows[2].split(" | ")
    assert first[2] == "+25.0% [+25.0%, +25.0%]" and first[3] == "faster |"
    # no change, only drift: the interval holds 0 and the verdict says so
    rows = claims_table(claims_audit(baseline, [b * f for b, f in zip(baseline, (1.02, 0.98) * 3)]))
    assert rows[2].endswith("| not resolved: its interval holds no change |") and "[" in rows[2]
    # slower beyond doubt
    assert claims_table(claims_audit(baseline, [b * 1.3 for b in baseline]))[2].endswith("| slower |")
    # the interval decides, not the noise: +10% whose pairs hold no change, and a steady +4% under 9% resolution
    split = claims_table(claims_audit([1.0] * 6, [0.8, 1.05] * 3))[2]
    assert "| +10.1% [" in split and split.endswith("| not resolved: its interval holds no change |")
    assert claims_table(claims_audit(baseline, [b / 1.04 for b in baseline]))[2].endswith(
        "| +4.0% [+4.0%, +4.0%] | faster |"
    )


def test_a_claim_measured_in_too_few_rounds_has_no_interval_and_is_judged_against_the_noise():
    from harness.cost.audit_report import claims_table

    row = claims_table(claims_audit([1.0, 1.0], [0.95, 0.95]))[2]  # +5.3% under 3% noise: resolves 9%
    assert "+5.3% (2 pairs: too few for a 95% interval, 6 needed) | within noise: not resolved |" in row
    assert claims_table(claims_audit([1.0, 1.0], [0.5, 0.5]))[2].endswith("| faster |")


def test_an_audit_never_overwrites_an_earlier_one_unless_told(tmp_path):
    from harness.cost.audit_report import audit_folder

    committed = audit_folder(tmp_path, "cpu-2cores", overwrite=True)
    (committed / "report.md").write_text("the committed audit")
    first = audit_folder(tmp_path, "cpu-2cores", overwrite=False)
    second = audit_folder(tmp_path, "cpu-2cores", overwrite=False)
    assert committed.name == "audit-cpu-2cores" and len({committed, first, second}) == 3
    assert first.name.startswith("audit-cpu-2cores-20") and second.name.startswith(first.name + "-")
    assert (committed / "report.md").read_text() == "the committed audit"


def test_the_cost_model_never_fits_a_negative_cost():
    # four noisy presets where the larger ones happened to run faster: a free least-squares fit gives the token
    # term a negative cost and predicts that 250 steps at 300 tokens take -3 s
    points = [(25, 2, 75, 0.46), (18, 2, 56, 0.47), (15, 2, 30, 0.49), (20, 2, 75, 0.45)]
    model = fit_cost_model(points)
    assert min(model.fixed, model.per_pass, model.per_token) >= 0
    assert model.predict(250, 2, 300) >= model.predict(25, 2, 75) > 0


def test_the_cost_model_recovers_known_costs_exactly():
    fixed, per_pass, per_token = 0.2, 1e-3, 1e-4
    points = [(s, p, t, fixed + s * p * (per_pass + per_token * t)) for s, p, t in
              [(25, 2, 75), (18, 2, 56), (15, 1, 30), (20, 2, 120), (10, 1, 75)]]  # fmt: skip
    model = fit_cost_model(points)
    assert (model.fixed, model.per_pass, model.per_token) == pytest.approx((fixed, per_pass, per_token))
    assert model.max_error < 1e-9
