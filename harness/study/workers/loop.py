"""A worker of a study: claim a trial under the study's lock, run it with a heartbeat, repeat.

Any number of workers, on one machine (SQLite) or many (PostgreSQL), run one study:

- exactly ``search.n_trials`` trials count: complete, pruned, and failed for a reason of
  the trial itself. A trial whose process was killed (its heartbeat went stale) does not
  count and its preset is measured again; neither do trials failed by a configuration error.
- the baseline is measured first: while it is not complete, other workers wait for it
  (nothing else can be judged against it), and a killed baseline is claimed again once
  its heartbeat is stale. The proposal's presets are enqueued once, under the lock.
- a session whose trials keep failing for one and the same reason stops with that reason.

Why not ``study.optimize`` with heartbeats and ``MaxTrialsCallback``: ``MaxTrialsCallback`` stops a worker
after a trial finishes, so workers that ask at the same moment all start one more trial and a study ends with
up to one extra trial per worker; it counts killed trials (FAIL with no reason) and configuration failures
too; and nothing in ``optimize`` makes the others wait for the baseline, or enqueues the presets once. One
short lock around "count, enqueue, ask" gives exactly ``n_trials``; the rest (heartbeats, stale-trial
failing, tell) is Optuna's own.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import optuna
from omegaconf import DictConfig

from harness.signals import raise_if_stopped, signals_deferred, stopping_signal
from harness.study.engine import space
from harness.study.engine.enqueue import enqueue_presets, preset_params
from harness.study.engine.floors import baseline_trial, config_errors, counts_toward, is_baseline
from harness.study.engine.objective import Objective
from harness.study.workers.lock import StudyLock

log = logging.getLogger(__name__)
# Workers ask for trials themselves (under the study's lock) and beat their heartbeats themselves.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
STATES = optuna.trial.TrialState
CONFIG_FAILURES = 3  # the same failure this many times in a row, nothing complete: a configuration error


@dataclass(frozen=True)
class Decision:
    """What a worker does next: run a claimed trial, wait (and why), or stop."""

    trial: optuna.Trial | None = None
    wait: str = ""

    @property
    def stop(self) -> bool:
        return self.trial is None and not self.wait


class Worker:
    """Claims and runs trials of one study until it holds ``search.n_trials``."""

    def __init__(self, cfg: DictConfig, study: optuna.Study, storage, lock: StudyLock):
        self.cfg, self.study, self.storage, self.lock = cfg, study, storage, lock
        self.objective = Objective(cfg, study)
        self.n_trials = int(cfg.search.n_trials)
        self.failures: list[tuple[int, str]] = []  # this session's failures since its last success
        self.ran = 0

    def _baseline_first(self, trials: list) -> Decision | None:
        """While the baseline is not complete: claim it, or wait for the worker measuring it."""
        if "baseline" not in list(self.cfg.search.enqueue or []):
            return None
        if baseline_trial(trials) is not None:
            return None
        mine = [t for t in trials if is_baseline(t)]
        running = [t.number for t in mine if t.state == STATES.RUNNING]
        if running:
            return Decision(
                wait=f"the baseline (trial #{running[0]}) is being measured; every trial is judged against it"
            )
        if not any(t.state == STATES.WAITING for t in mine):
            self.study.enqueue_trial(
                preset_params(self.cfg, self.objective.dists, "baseline"),
                user_attrs={"preset_name": "baseline"},
            )
        return Decision(trial=self.study.ask())

    def claim(self) -> Decision:
        """Under the lock: the next trial to run, a reason to wait, or stop (the study is full)."""
        optuna.storages.fail_stale_trials(self.study)  # killed workers' trials: FAIL, uncounted
        trials = self.study.get_trials(deepcopy=False)
        done = sum(counts_toward(t, config_errors(self.study)) for t in trials)
        if done >= self.n_trials:
            return Decision()
        first = self._baseline_first(trials)
        if first is not None:
            return first
        running = [t.number for t in trials if t.state == STATES.RUNNING]
        waiting = sum(t.state == STATES.WAITING for t in trials)
        enqueue_presets(
            self.study,
            self.cfg,
            self.objective.dists,
            self.n_trials - done - len(running) - waiting,
        )
        waiting = sum(t.state == STATES.WAITING for t in self.study.get_trials(deepcopy=False))
        if waiting or done + len(running) < self.n_trials:
            return Decision(trial=self.study.ask())
        return Decision(
            wait=f"the study's last trials {running} are running elsewhere (claimed again if their worker dies)"
        )

    def run(self, deadline: float | None) -> int:
        """Claim and run trials until the study is full or the deadline passes; the trials this worker ran."""
        last_wait = ""
        while deadline is None or time.time() < deadline:
            raise_if_stopped()  # nothing claimed yet
            decision = self._claim_and_run()
            if decision.stop:
                break
            if decision.trial is None:
                if decision.wait != last_wait:
                    log.info("waiting: %s", decision.wait)
                    last_wait = decision.wait
                time.sleep(float(self.cfg.search.heartbeat_s))
                continue
            last_wait = ""
        return self.ran

    def _claim_and_run(self) -> Decision:
        """Claim a trial under the lock and run it; SIGINT or SIGTERM once it is claimed fails it, uncounted (its
        preset is measured again later)."""
        trial = None
        try:
            with signals_deferred(), self.lock:  # claimed whole, then guarded here, or not claimed at all
                decision = self.claim()
                trial = decision.trial
                if trial is not None:
                    self.storage.record_heartbeat(trial._trial_id)  # stale from now on if killed
                    # the sampler proposes now, under the lock, so the next worker's proposal sees this one
                    space.suggest(trial, self.objective.dists)
            if trial is not None:
                self._measure_trial(trial)
        except KeyboardInterrupt as interrupt:
            if trial is not None and self.study.get_trials(deepcopy=False)[trial.number].state == STATES.RUNNING:
                trial.set_user_attr("stopped_by", stopping_signal(interrupt).name)
                self.study.tell(trial, state=STATES.FAIL)
            raise  # (a trial told just before the signal stays as it was told)
        return decision

    def _measure_trial(self, trial: optuna.Trial) -> None:
        with heartbeat(self.storage, trial, float(self.cfg.search.heartbeat_s)):
            try:
                value = self.objective(trial)
            except optuna.TrialPruned as pruned:
                self.study.tell(trial, state=STATES.PRUNED)
                log.info("trial #%d pruned: %s", trial.number, pruned)
                value = None
            except Exception as error:  # recorded with its reason by the objective
                raise_if_stopped()  # a failure a signal caused is a stop (the trial is failed, uncounted, above)
                self.study.tell(trial, state=STATES.FAIL)
                log.warning("trial #%d failed: %s", trial.number, trial.user_attrs.get("fail_reason", error))
                self.ran += 1
                self._check_config_error(trial)
                return
        if value is not None:
            self.study.tell(trial, value)
            log.info(
                "trial #%d (%s): %.3f s/video", trial.number, trial.user_attrs.get("preset_name", "searched"), value
            )
        self.ran += 1
        self.failures.clear()

    def _check_config_error(self, trial: optuna.Trial) -> None:
        """Stop the session when its trials keep failing for one reason: mark them uncounted, say why."""
        attrs = self.study.get_trials(deepcopy=False)[trial.number].user_attrs
        reason = attrs.get("fail_reason") or "no reason recorded"
        self.failures.append((trial.number, reason))
        recent = self.failures[-CONFIG_FAILURES:]
        if len(recent) == CONFIG_FAILURES and len({r for _, r in recent}) == 1:
            self.study.set_user_attr("config_errors", sorted(config_errors(self.study) | {n for n, _ in recent}))
            raise ConfigurationError(
                f"trials {[n for n, _ in recent]} all failed with: {reason}; the study stops here, those trials do "
                f"not count, and it goes on once the configuration is fixed"
            )


class ConfigurationError(ValueError):
    """Every trial of a session fails for the same reason: the configuration, not the presets."""


@contextmanager
def heartbeat(storage, trial: optuna.Trial, interval_s: float) -> Iterator[None]:
    """Record the trial's heartbeat every ``interval_s`` while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            storage.record_heartbeat(trial._trial_id)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
