"""The audit runs on the tiny model and writes a report with the proposal's claims beside measurements."""

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
    )
    report = run_audit(cfg)
    text = report.read_text()
    assert report.parent.name.startswith("audit-")
    for claim in CLAIMS:
        assert f"| {claim} | +{CLAIMS[claim][0]:.0%} |" in text
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
    assert rounds == [("unipc", 3), ("euler", 3), ("unipc", 3), ("euler", 3)]
    assert (unipc.label, euler.label, unipc.steps) == ("solver=unipc", "solver=euler", 3)
    assert unipc.wall_s > 0 and euler.wall_s > 0


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
