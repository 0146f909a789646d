"""Pruning: a trial stops when the study's measurements say it cannot win, and not on one noisy video."""

from dataclasses import asdict

import optuna
import pytest
from conftest import store_client
from test_search import compose_cfg, load

from harness.pipeline.levers import Speed
from harness.study.engine.descent import DescentSampler
from harness.study.engine.floors import Floor
from harness.study.engine.optimize import search_presets
from harness.study.engine.pruning import Cost, Gate, Rules, levers_key, optuna_pruner, set_floor_constraints
from harness.study.report.markdown import output_cell

STATES = optuna.trial.TrialState
LEVERS = levers_key(Speed())
PSNR_FLOOR = [Floor("psnr_db", value=30.0)]


def measured(study, value, psnr, calls=50, constraint=-1.0):
    """A complete trial as the harness records one: its time, per-video scores, cost and constraint."""
    trial = study.ask()
    trial.set_user_attr("video_scores", {"wall_time_s": [value, value], "psnr_db": psnr})
    trial.set_user_attr("cost", asdict(Cost(25, calls, 1000, LEVERS)))
    set_floor_constraints(trial, {"psnr_db": constraint})
    study.tell(trial, value)


@pytest.fixture
def study():
    """A best feasible trial at 1.00 s/video, and four trials whose second video never lifted their PSNR mean
    by more than 0.5 dB."""
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.NopPruner())
    measured(study, 1.00, [40.0, 41.0], calls=20)
    measured(study, 1.60, [100.0, 100.0], calls=50)  # the baseline: its own reference
    measured(study, 1.30, [35.0, 34.0], calls=35)
    measured(study, 0.70, [20.0, 21.0], calls=8, constraint=9.5)  # fast, infeasible
    return study


def video(seconds, psnr=40.0):
    return seconds, {"psnr_db": psnr}


def test_one_slow_video_does_not_prune_a_trial_whose_median_would_win(study):
    gate = Gate.open(study, Rules(), PSNR_FLOOR, named=False)
    trial = study.ask()
    assert gate.after_video(trial, *video(1.30)) is None  # one video says nothing about its median
    assert gate.after_video(trial, *video(0.60)) is None  # median 0.95 s, spread 55%: it may well win


def test_a_trial_whose_videos_agree_it_is_slow_is_pruned(study):
    gate = Gate.open(study, Rules(), PSNR_FLOOR, named=False)
    trial = study.ask()
    assert gate.after_video(trial, *video(1.40)) is None
    reason = gate.after_video(trial, *video(1.38))
    assert reason and reason.startswith("median 1.390 s over 2 videos") and "1.25 x best feasible 1.000 s" in reason


def test_a_trial_far_below_a_floor_stops_after_its_first_video(study):
    gate = Gate.open(study, Rules(), PSNR_FLOOR, named=False)
    reason = gate.after_video(study.ask(), *video(0.5, psnr=12.0))
    assert reason == (
        "psnr_db 12 over 1 video(s) misses its floor 30 by 18, and the rest of a trial's videos has lifted its "
        "mean by 0.5 at most"
    )


def test_a_trial_above_a_floor_whose_later_videos_always_lower_it_says_so():
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.NopPruner())
    for value, psnr in [(1.0, [40.0, 38.0]), (0.9, [35.0, 32.0]), (0.8, [31.0, 29.5])]:  # lifts -1, -1.5, -0.75
        measured(study, value, psnr)
    gate = Gate.open(study, Rules(), PSNR_FLOOR, named=False)
    assert gate.after_video(study.ask(), *video(0.5, psnr=30.2)) == (
        "psnr_db 30.2 over 1 video(s) is above its floor 30 by 0.2, but the rest of a trial's videos has always "
        "lowered its mean, by 0.75 or more: it would end below"
    )
    below = Gate.open(study, Rules(), PSNR_FLOOR, named=False)
    assert below.after_video(study.ask(), *video(0.5, psnr=25.0)) == (
        "psnr_db 25 over 1 video(s) misses its floor 30 by 5, and the rest of a trial's videos has always lowered "
        "its mean, by 0.75 or more"
    )


def test_a_trial_just_below_a_floor_goes_on_its_other_videos_may_lift_it(study):
    gate = Gate.open(study, Rules(), PSNR_FLOOR, named=False)
    assert gate.after_video(study.ask(), *video(0.5, psnr=29.8)) is None


def test_quality_stopping_waits_until_the_spread_is_measured():
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.NopPruner())
    measured(study, 1.60, [100.0, 100.0])
    gate = Gate.open(study, Rules(), PSNR_FLOOR, named=False)
    assert gate.after_video(study.ask(), *video(0.5, psnr=5.0)) is None


def test_no_rule_stops_a_trial_after_its_last_video(study):
    gate = Gate.open(study, Rules(), PSNR_FLOOR, named=False, videos=1)
    assert gate.after_video(study.ask(), *video(0.5, psnr=12.0)) is None  # stopping now would only lose its numbers


def test_named_presets_are_measured_in_full(study):
    gate = Gate.open(study, Rules(), PSNR_FLOOR, named=True)
    trial = study.ask()
    assert gate.after_video(trial, *video(3.0, psnr=5.0)) is None
    assert gate.after_video(trial, *video(3.0, psnr=5.0)) is None


def test_a_trial_predicted_far_slower_than_the_best_is_pruned_before_generating(study):
    gate = Gate.open(study, Rules(), PSNR_FLOOR, named=False)
    reason = gate.before(Cost(25, 500, 1000, LEVERS))
    assert reason and reason.startswith("predicted ") and "nothing generated" in reason
    assert gate.predicted_s > 8  # about 0.6 s + 500 calls x 0.02 s: ten times the best


def test_a_trial_predicted_to_compete_is_generated(study):
    gate = Gate.open(study, Rules(), PSNR_FLOOR, named=False)
    assert gate.before(Cost(12, 12, 1000, LEVERS)) is None
    assert gate.predicted_s < 1.0


def test_no_prediction_for_a_cache_the_model_was_not_fitted_on(study):
    gate = Gate.open(study, Rules(), PSNR_FLOOR, named=False)
    assert gate.before(Cost(25, 500, 1000, "cache=first_block attention=native compile=off")) is None
    assert gate.predicted_s is None


def test_an_optuna_pruner_is_chosen_in_config_and_a_bad_one_named():
    median = optuna_pruner({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2})
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert isinstance(optuna_pruner(None), optuna.pruners.NopPruner)
    allowed = r"allowed: \['optuna.pruners.MedianPruner'"
    with pytest.raises(ValueError, match=r"search.pruner._target_='Median' is not an Optuna pruner; " + allowed):
        optuna_pruner({"_target_": "Median"})
    with pytest.raises(ValueError, match=r"is not an Optuna pruner"):  # Hyperband hides brackets from the sampler
        optuna_pruner({"_target_": "optuna.pruners.HyperbandPruner"})
    with pytest.raises(ValueError, match=r"search.pruner=.* is refused by optuna.pruners.MedianPruner: "):
        optuna_pruner({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": -1})


@pytest.mark.slow  # seconds to a minute end to end, kept out of the 5-minute default run: .ci/run runs it
def test_a_study_stops_hopeless_trials_early_and_says_why_in_optuna_and_mlflow(tmp_path, base_overrides):
    """On the tiny model with two prompts: a 4-step video far below the PSNR floor generates one video, a trial
    predicted far slower than the best (190 steps) generates none, and a smaller, shorter output than one that
    already missed the floor generates none; all are PRUNED with the reason."""
    overrides = [
        *base_overrides,
        "prompts.texts=[a red circle moving left,a blue square moving up]",
        "search.space.sample_steps.high=190",  # x shift 5 = 950: within what the solvers stay finite at (990)
        "search.space.sample_shift.high=5.0",
        "timing.repeats=3",  # medians of 3: a burst of load on a shared CI machine must not flatten the cost model
        "search.floors.psnr_db.value=40",  # the tiny model makes 44 dB at 20 dpm++ steps (quality_first), 33 at 4
        "search.n_trials=4",
    ]
    search_presets(compose_cfg(overrides), overrides)  # the baseline and the proposal's presets, in full
    study = load(compose_cfg(overrides))
    assert all(t.state == STATES.COMPLETE for t in study.trials)
    smaller = {"sample_steps": 4, "sample_solver": "euler", "sample_shift": 1.0, "sample_guide_scale": 1.0}
    study.enqueue_trial({**smaller, "frame_num": 81, "size": "480*832"})  # the tiny model's PSNR: 33 dB
    slower = {"sample_steps": 190, "sample_solver": "unipc", "sample_shift": 5.0, "sample_guide_scale": 8.0}
    study.enqueue_trial({**slower, "frame_num": 81, "size": "480*832"})
    study.enqueue_trial({**smaller, "frame_num": 45, "size": "384*640"})  # beyond balanced's 61 frames at 16 dB
    more = [*overrides[:-1], "search.n_trials=7"]
    search_presets(compose_cfg(more), more)

    hopeless, slow, lost = load(compose_cfg(more)).trials[4:7]
    assert lost.state == STATES.PRUNED and lost.user_attrs["prune_rule"] == "spec" and _video_runs(tmp_path, lost) == 0
    assert "384x640, 45 frames is at least as far from the baseline's" in lost.user_attrs["prune_reason"]
    assert hopeless.state == slow.state == STATES.PRUNED
    assert "misses its floor" in hopeless.user_attrs["prune_reason"]
    assert "over 1 video(s)" in hopeless.user_attrs["prune_reason"]
    assert slow.user_attrs["prune_reason"].startswith("predicted ")
    assert (hopeless.user_attrs["prune_rule"], slow.user_attrs["prune_rule"]) == ("quality", "predicted")
    assert slow.user_attrs["predicted_time_s"] > study.trials[0].value  # 190 steps against the baseline's 25
    videos = {t.number: _video_runs(tmp_path, t) for t in (hopeless, slow)}
    assert videos == {4: 1, 5: 0}
    # a pruned trial's row still says what it would have produced
    assert lost.user_attrs["output_spec"] == "384x640, 45 frames, 2.81 s"
    assert lost.user_attrs["spec_change"] == "size 480x832 -> 384x640; frames 81 -> 45"
    assert "384x640, 45 frames, 2.81 s *" in output_cell(lost)
    assert slow.user_attrs["output_spec"] == "480x832, 81 frames, 5.06 s" and "spec_change" not in slow.user_attrs
    run = store_client(tmp_path).get_run(slow.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["prune_reason"] == slow.user_attrs["prune_reason"]
    assert run.data.metrics["predicted_time_s"] == pytest.approx(slow.user_attrs["predicted_time_s"])


def _video_runs(root, trial):
    client = store_client(root)
    experiment = client.get_experiment_by_name("wan-presets/tiny")
    query = f"tags.kind = 'video' and tags.trial_number = '{trial.number}'"
    return len(client.search_runs([experiment.experiment_id], query))


def test_descent_walks_down_from_the_baseline_then_sideways():
    """Fewer steps while they keep the floors; at the first miss, another solver at the cheapest feasible steps."""
    space = {
        "sample_steps": optuna.distributions.IntDistribution(4, 25, step=3),
        "sample_solver": optuna.distributions.CategoricalDistribution(["unipc", "dpm++"]),
    }
    study = optuna.create_study(sampler=DescentSampler(seed=0, n_startup_trials=6), pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({"sample_steps": 25, "sample_solver": "unipc"})
    proposed = []
    for keeps_floors in (True, True, True, False):
        trial = study.ask(space)
        steps = trial.params["sample_steps"]
        proposed.append((steps, trial.params["sample_solver"]))
        trial.set_user_attr("cost", asdict(Cost(steps, 2 * steps, 10, LEVERS)))
        set_floor_constraints(trial, {"psnr_db": -1.0 if keeps_floors else 5.0})
        study.tell(trial, 0.02 * steps)
    assert proposed == [(25, "unipc"), (22, "unipc"), (19, "unipc"), (16, "unipc")]
    sideways = study.ask(space).params
    assert (sideways["sample_steps"], sideways["sample_solver"]) == (19, "dpm++")


def test_descent_does_not_retry_a_value_that_broke_a_floor_at_every_step_count():
    """A smaller size loses fidelity: once it has, descent walks the steps down before trying it again."""
    space = {
        "sample_steps": optuna.distributions.IntDistribution(4, 25, step=3),
        "size": optuna.distributions.CategoricalDistribution(["480*832", "384*640"]),
    }
    for seed in range(5):
        proposed = _descend(space, seed, asks=10)
        full_size_steps = [steps for steps, size in proposed if size == "480*832"]
        assert full_size_steps == [25, 22, 19, 16, 13, 10, 7, 4], seed  # every step count, none skipped
        smaller = [steps for steps, size in proposed if size == "384*640"]
        assert len(smaller) == 2 and smaller[-1] == 4, seed  # once, then only from the cheapest point left


def _descend(space, seed, asks):
    """Descent's proposals when every full-size preset keeps the floors and every smaller one breaks them."""
    sampler = DescentSampler(seed=seed, n_startup_trials=20)
    study = optuna.create_study(sampler=sampler, pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({"sample_steps": 25, "size": "480*832"})
    proposed = []
    for _ in range(asks):
        trial = study.ask(space)
        steps, size = trial.params["sample_steps"], trial.params["size"]
        proposed.append((steps, size))
        tokens = 10 if size == "480*832" else 6
        trial.set_user_attr("cost", asdict(Cost(steps, 2 * steps, tokens, LEVERS)))
        set_floor_constraints(trial, {"psnr_db": -1.0 if size == "480*832" else 12.0})
        study.tell(trial, 0.002 * steps * tokens)
    return proposed


def test_a_proposal_repeating_a_measured_preset_takes_its_outcome_without_generating():
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    dist = {"sample_steps": optuna.distributions.IntDistribution(4, 25)}
    first = study.ask(dist)
    first.report(0.8, 1)
    set_floor_constraints(first, {"psnr_db": 4.0})
    study.tell(first, 0.8)
    study.enqueue_trial(first.params)  # what a sampler proposing it again would ask
    again = study.ask(dist)
    gate = Gate.open(study, Rules(), PSNR_FLOOR, named=False)
    same = gate.same_as(again.params)
    assert same.number == 0
    assert gate.repeat(again, same) == "same preset as trial 0, measured already: nothing generated"
    study.tell(again, state=STATES.PRUNED)
    repeated = study.trials[1]
    assert repeated.constraints == {"floor_psnr_db": 4.0, "0": 4.0} and repeated.intermediate_values == {1: 0.8}
    assert Gate.open(study, Rules(predict=False), PSNR_FLOOR, named=False).same_as(first.params) is None


def test_a_switched_off_cache_s_settings_make_no_new_preset():
    """In the levers space a cache's threshold is searched too; while that cache is off it changes nothing, so descent
    never moves it and a trial differing only there repeats a measured one (once, a 30-trial study spent 5 trials
    re-measuring presets that differed only in the threshold of a cache that was off)."""
    space = {
        "sample_steps": optuna.distributions.IntDistribution(19, 25, step=3),  # cheaper moves run out at 19
        "cache": optuna.distributions.CategoricalDistribution(["none", "first_block"]),
        "cache_threshold": optuna.distributions.FloatDistribution(0.02, 0.2, step=0.02),
    }
    study = optuna.create_study(sampler=DescentSampler(seed=0, n_startup_trials=20), pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({"sample_steps": 25, "cache": "none", "cache_threshold": 0.06})
    proposed = []
    for _ in range(6):
        trial = study.ask(space)
        proposed.append(dict(trial.params))
        trial.set_user_attr("cost", asdict(Cost(trial.params["sample_steps"], 50, 10, LEVERS)))
        set_floor_constraints(trial, {"psnr_db": -1.0 if trial.params["cache"] == "none" else 3.0})
        study.tell(trial, 0.02 * trial.params["sample_steps"])
    off = [p for p in proposed if p["cache"] == "none"]
    assert {p["cache_threshold"] for p in off} == {0.06}  # never moved while its cache is off
    assert len({p["sample_steps"] for p in off}) == len(off)  # so no preset is measured twice
    gate = Gate.open(study, Rules(), PSNR_FLOOR, named=False)
    assert gate.same_as({"sample_steps": 25, "cache": "none", "cache_threshold": 0.14}).number == 0
    assert gate.same_as({"sample_steps": 25, "cache": "first_block", "cache_threshold": 0.14}) is None
