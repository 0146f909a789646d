"""``experiments/<study>/report.html``: the baseline, the proposal's presets and the best feasible trials,
playing side by side per prompt, each with its time, speed-up, scores and output spec.

The videos are the trials' own ``video.mp4`` artifacts, copied beside the page (small
models' videos are enlarged by the browser with square pixels, for display only).
"""

from __future__ import annotations

import html
import logging
import shutil
from pathlib import Path

import mlflow
import optuna

from harness.study.floors import feasible, status

log = logging.getLogger(__name__)

PRESETS = ("baseline", "balanced", "aggressive", "quality_first")


def columns(study: optuna.Study, best: int = 3) -> list[tuple[str, optuna.trial.FrozenTrial]]:
    """The trials shown: the baseline and the proposal's presets, then the fastest feasible searched trials."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    named = {t.user_attrs["preset_name"]: t for t in complete if t.user_attrs.get("preset_name") in PRESETS}
    shown = [(name, named[name]) for name in PRESETS if name in named]
    searched = sorted((t for t in complete if feasible(t) and "preset_name" not in t.user_attrs), key=lambda t: t.value)
    return shown + [(f"best feasible #{t.number}", t) for t in searched[:best]]


def _videos(client: mlflow.MlflowClient, experiment_id: str, study: str, trial: int) -> dict[str, str]:
    """A trial's video runs, prompt -> run id (its first seed)."""
    query = f"tags.kind = 'video' and tags.study = '{study}' and tags.trial_number = '{trial}'"
    found: dict[str, str] = {}
    for run in client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"]):
        found.setdefault(run.data.params.get("prompt", ""), run.info.run_id)
    return found


def _caption(name: str, trial: optuna.trial.FrozenTrial, baseline: optuna.trial.FrozenTrial | None) -> str:
    attrs = trial.user_attrs
    speed = f"{baseline.value / trial.value:.2f}x" if baseline else "-"
    scores = " · ".join(f"{label} {attrs[key]:{spec}}" for label, key, spec in (
        ("CLIP", "mean_clip_score", ".1f"), ("PSNR", "mean_psnr_db", ".1f"), ("SSIM", "mean_ssim", ".3f"))
        if key in attrs)  # fmt: skip
    changed = " (changed)" if attrs.get("spec_change") else ""
    return (f"<b>{html.escape(name)}</b> — {status(trial)}<br>{trial.value:.3f} s/video · {speed}<br>{scores}"
            f"<br>{html.escape(attrs.get('output_spec', ''))}{changed}")  # fmt: skip


def write_page(study: optuna.Study, folder: Path, experiment_id: str) -> list[Path]:
    """Write ``report.html`` and copy its videos into ``videos/``; the files written."""
    client = mlflow.MlflowClient()
    shown = columns(study)
    baseline = next((t for name, t in shown if name == "baseline"), None)
    videos = {t.number: _videos(client, experiment_id, study.study_name, t.number) for _, t in shown}
    prompts = list(dict.fromkeys(p for found in videos.values() for p in found))
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    written, sections = [], []
    for index, prompt in enumerate(prompts):
        cells = []
        for name, trial in shown:
            run_id = videos[trial.number].get(prompt)
            if run_id is None:
                continue
            target = folder / "videos" / f"trial{trial.number}-prompt{index}.mp4"
            shutil.copyfile(
                client.download_artifacts(run_id, "video.mp4", str(folder / "videos" / ".download")), target
            )
            written.append(target)
            cells.append(f'<figure><video src="videos/{target.name}" autoplay loop muted playsinline controls></video>'
                         f"<figcaption>{_caption(name, trial, baseline)}</figcaption></figure>")  # fmt: skip
        sections.append(f"<h2>{html.escape(prompt)}</h2><div class=row>{''.join(cells)}</div>")
    shutil.rmtree(folder / "videos" / ".download", ignore_errors=True)
    _remove_stale(folder / "videos", written)
    if not written:
        log.warning("report.html shows no videos: MLflow experiment %s holds no video runs of study %r",
                    experiment_id, study.study_name)  # fmt: skip
    page = folder / "report.html"
    page.write_text(PAGE.format(study=html.escape(study.study_name), sections="\n".join(sections)))
    return [page, *written]


def _remove_stale(videos: Path, written: list[Path]) -> None:
    """Delete the page's videos from an earlier report that this one no longer shows (a re-run study numbers its
    trials anew): the folder then holds exactly what the page plays. Other files are left alone."""
    for stale in set(videos.glob("trial*-prompt*.mp4")) - set(written):
        stale.unlink()


PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Study {study}: presets side by side</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
.row {{ display: flex; gap: 1em; flex-wrap: wrap; align-items: flex-start; }}
figure {{ margin: 0; }}
video {{ height: 400px; image-rendering: pixelated; background: #000; }}
figcaption {{ font-size: 13px; max-width: 260px; }}
</style></head><body>
<h1>Study {study}: the baseline, the proposal's presets and the best feasible trials</h1>
<p>Same prompt and seed in every column; speed-up against the baseline measured in the same study. Videos are
shown enlarged with square pixels; what was measured is the video as generated. A changed output spec is
scored against the baseline's own video, resampled (see report.md).</p>
{sections}
</body></html>
"""
