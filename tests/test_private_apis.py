"""The few private names of Optuna and optuna-dashboard the harness relies on, pinned: an upgrade that moves
or changes one fails here, by name, instead of silently badging an infeasible trial or losing a heartbeat; and the
rule of diffusers' WanPipeline the harness overrides (which steps run the unconditional pass)."""

import inspect

import optuna
import optuna_dashboard
from optuna_dashboard import _app, _serializer

from harness.study.engine.pruning import set_floor_constraints
from harness.study.report.dashboard import best_feasible_trials


def test_the_dashboard_serializes_a_study_through_the_name_the_harness_replaces():
    """``harness.study.report.dashboard.serve`` swaps ``_app.serialize_study_detail`` to pass feasible best trials."""
    assert _app.serialize_study_detail is _serializer.serialize_study_detail
    assert "serialize_study_detail(" in inspect.getsource(_app)  # called through the module's global name
    params = list(inspect.signature(_serializer.serialize_study_detail).parameters)
    assert params[:2] == ["study", "best_trials"], params
    assert callable(optuna_dashboard.run_server)


def test_the_dashboard_reads_the_list_form_of_constraints_the_harness_writes(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/o.db")
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    set_floor_constraints(trial, {"psnr_db": 2.0, "clip_score": -1.0})
    study.tell(trial, 1.0)
    frozen = study.trials[0]
    assert _serializer.CONSTRAINTS_KEY == "constraints"
    assert frozen.system_attrs[_serializer.CONSTRAINTS_KEY] == [2.0, -1.0]
    assert _serializer.serialize_frozen_trial(study._study_id, frozen, {})["constraints"] == [2.0, -1.0]
    assert best_feasible_trials(storage, study._study_id) == []  # PSNR missed its floor


def test_trial_and_study_ids_are_the_storage_s(tmp_path):
    """``trial._trial_id`` (heartbeats, the constraints' list form) and ``study._study_id`` (the dashboard)."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/o.db", heartbeat_interval=60)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    assert study._study_id == storage.get_study_id_from_name("s")
    assert trial._trial_id == storage.get_trial_id_from_study_id_trial_number(study._study_id, trial.number)
    storage.record_heartbeat(trial._trial_id)  # what a running worker calls every heartbeat_s
    optuna.storages.fail_stale_trials(study)  # what a starting worker calls: a live heartbeat is not stale
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING


def test_wanpipeline_reads_its_guidance_rule_where_the_worker_s_pipeline_overrides_it():
    """``WorkerWanPipeline`` overrides the property ``do_classifier_free_guidance``; the denoising loop must read
    it (not the scale) for the official code's both passes at guidance <= 1 and for guidance truncation."""
    from diffusers import WanPipeline

    assert "if self.do_classifier_free_guidance:" in inspect.getsource(WanPipeline.__call__)
    assert isinstance(inspect.getattr_static(WanPipeline, "do_classifier_free_guidance"), property)
    assert isinstance(inspect.getattr_static(WanPipeline, "guidance_scale"), property)
