"""The rules a verdict rests on, each pinned by a case that a plausible slip would get wrong."""

import numpy as np
import optuna
import pytest

from harness.measure.pairing import paired_speedup
from harness.measure.quality import fidelity
from harness.study.engine.floors import Floor, feasible
from harness.study.engine.pruning import Gate, Rules, set_floor_constraints


def test_a_trial_exactly_on_its_floor_is_feasible():
    study = optuna.create_study()
    for slack in (0.0, 1e-9):
        trial = study.ask()
        set_floor_constraints(trial, {"psnr_db": slack})
        study.tell(trial, 1.0)
    on_the_floor, just_below = study.trials
    assert feasible(on_the_floor) and not feasible(just_below)


def test_the_time_rule_gives_a_trial_the_benefit_of_its_spread():
    study = optuna.create_study()
    best = study.ask()
    set_floor_constraints(best, {"psnr_db": -1.0})
    study.tell(best, 1.0)
    gate = Gate.open(study, Rules(time_margin=1.25), [Floor("psnr_db", value=30.0)], named=False, videos=3)
    trial = study.ask()
    assert gate.after_video(trial, 1.0, {"psnr_db": 40.0}) is None
    # median 1.5 s is past 1.25 x the best, but the two videos disagree by a factor 2: 1.5 x (1 - 49%) is not
    assert gate.after_video(trial, 2.0, {"psnr_db": 40.0}) is None
    agreeing = Gate.open(study, Rules(time_margin=1.25), [Floor("psnr_db", value=30.0)], named=False, videos=3)
    other = study.ask()
    agreeing.after_video(other, 1.50, {"psnr_db": 40.0})
    assert agreeing.after_video(other, 1.52, {"psnr_db": 40.0}).startswith("median 1.510 s")


def test_a_preset_twice_as_fast_is_a_speed_up_of_two_not_one_half():
    result = paired_speedup(baseline_s=[2.0, 4.0, 3.0], preset_s=[1.0, 2.0, 1.5])
    assert result.median == pytest.approx(2.0) and result.baseline_s == 3.0 and result.preset_s == 1.5


def test_fidelity_of_a_known_error():
    reference = np.full((2, 16, 16, 3), 110, np.uint8)
    frames = np.full((2, 16, 16, 3), 100, np.uint8)  # every pixel 10/255 off: MSE (10/255)^2
    scores = fidelity(frames, reference)
    assert scores["psnr_db"] == pytest.approx(20 * np.log10(255 / 10), abs=1e-4)  # 28.13 dB
    assert fidelity(reference, reference, psnr_cap_db=100.0)["psnr_db"] == 100.0
