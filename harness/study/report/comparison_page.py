"""``report.html`` in the study's folder: the baseline, the proposal's presets and the best feasible trials,
playing side by side per prompt, each with its time, speed-up, scores and output spec.

It opens with one line: the winner, the exported preset, the paired speed-up and the floors. Each prompt's
videos play together under one control (from their first frame, restarting together), and the exported
preset is marked. The videos are the trials' own ``video.mp4`` artifacts, copied beside the page (small
models' videos are enlarged by the browser with square pixels, for display only).
"""

from __future__ import annotations

import html
import logging
import os
import shutil
from pathlib import Path

import mlflow
import optuna

from harness.measure.results import recorded
from harness.measure.tracking import quoted
from harness.study.engine.floors import best_feasible, feasible, is_baseline, status
from harness.study.export.drift import speedup_cell

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
    query = f"tags.kind = 'video' and tags.study = {quoted(study)} and tags.trial_number = {quoted(trial)}"
    found: dict[str, str] = {}
    for run in client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"]):
        found.setdefault(run.data.params.get("prompt", ""), run.info.run_id)
    return found


def _caption(name: str, trial: optuna.trial.FrozenTrial, study: optuna.Study) -> str:
    attrs = trial.user_attrs
    speed = speedup_cell(study, trial)
    exported = study.user_attrs.get("exported", {}).get("trial") == trial.number
    scores = " · ".join(f"{label} {recorded(trial).mean(metric):{spec}}" for label, metric, spec in (
        ("CLIP", "clip_score", ".1f"), ("PSNR", "psnr_db", ".1f"), ("SSIM", "ssim", ".3f"))
        if recorded(trial).mean(metric) is not None)  # fmt: skip
    changed = " (changed)" if attrs.get("spec_change") else ""
    mark = " <mark>exported</mark>" if exported else ""
    made = f"<br><small>{html.escape(attrs['generated'])} as generated</small>" if "generated" in attrs else ""
    return (f"<b>{html.escape(name)}</b>{mark} — {status(trial)}<br>{trial.value:.3f} s/video · {speed}<br>{scores}"
            f"<br>{html.escape(attrs.get('output_spec', ''))}{changed}{made}")  # fmt: skip


def summary_line(study: optuna.Study) -> str:
    """The page's first line: the winner, the exported preset, the paired speed-up, the floors."""
    best = best_feasible(study)
    floors = "; ".join(study.user_attrs.get("floors", [])) or "none"
    if best is None or is_baseline(best):
        return f"No preset faster than the baseline kept every floor yet (floors: {floors})."
    exported = study.user_attrs.get("exported")
    export = (
        f"exported: trial #{exported['trial']}, paired speed-up on held-out seeds {exported['speedup']}"
        if exported else f"not exported yet (python -m harness.select study={study.study_name})"
    )  # fmt: skip
    return (
        f"Winner: trial #{best.number}, {best.value:.3f} s/video, paired speed-up {speedup_cell(study, best)}; "
        f"{export}; floors: {floors}."
    )


def write_page(study: optuna.Study, folder: Path, experiment_id: str) -> list[Path]:
    """Write ``report.html`` and copy its videos into ``videos/``; the files written."""
    # one progress bar per copied video (MLflow's default) buries what the report prints; a user may turn them on
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = mlflow.MlflowClient()
    shown = columns(study)
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
            cells.append(f'<figure><video src="videos/{target.name}" muted playsinline preload=auto></video>'
                         f"<figcaption>{_caption(name, trial, study)}</figcaption></figure>")  # fmt: skip
        control = "<button class=sync>play together</button>"
        sections.append(f"<h2>{html.escape(prompt)} {control}</h2><div class=row>{''.join(cells)}</div>")
    shutil.rmtree(folder / "videos" / ".download", ignore_errors=True)
    _remove_stale(folder / "videos", written)
    if not written:
        log.warning("report.html shows no videos: MLflow experiment %s holds no video runs of study %r",
                    experiment_id, study.study_name)  # fmt: skip
    page = folder / "report.html"
    page.write_text(PAGE.format(study=html.escape(study.study_name), summary=html.escape(summary_line(study)),
                                note=_scale_note(shown), sections="\n".join(sections)))  # fmt: skip
    return [page, *written]


def _scale_note(shown: list[tuple[str, optuna.trial.FrozenTrial]]) -> str:
    """What a small model's clips stand for: its frames and pixels are the preset's, scaled down."""
    scaled = [t for _, t in shown if "generated" in t.user_attrs and t.user_attrs.get("scaled")]
    if not scaled:
        return ""
    example = scaled[0].user_attrs
    made, stands_for = html.escape(example["generated"]), html.escape(example.get("output_spec", ""))
    return (
        f"<p><b>Scaled model:</b> each clip is what the model generates at its own scale ({made} for "
        f"{stands_for}): it plays for its frames / 16 s, shorter than the output it stands for, which the "
        f"captions name.</p>"
    )


def _remove_stale(videos: Path, written: list[Path]) -> None:
    """Delete the page's videos from an earlier report that this one no longer shows (a re-run study numbers its
    trials anew): the folder then holds exactly what the page plays. Other files are left alone."""
    for stale in set(videos.glob("trial*-prompt*.mp4")) - set(written):
        stale.unlink()


PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Study {study}: presets side by side</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
.summary {{ font-size: 17px; background: #eef6ee; padding: .6em; }}
mark {{ background: #ffd54f; }}
.row {{ display: flex; gap: 1em; flex-wrap: wrap; align-items: flex-start; }}
figure {{ margin: 0; }}
video {{ height: 400px; image-rendering: pixelated; background: #000; }}
figcaption {{ font-size: 13px; max-width: 260px; }}
</style></head><body>
<h1>Study {study}: the baseline, the proposal's presets and the best feasible trials</h1>
<p class=summary>{summary}</p>
<p>Same prompt and seed in every column; each row plays together from its first frame ("play together").
A speed-up is given only where the baseline was generated beside the preset in pairs (otherwise —). Videos
are shown enlarged with square pixels; what was measured is the video as generated. A changed output spec is
scored against the baseline's own video, resampled (see report.md).</p>
{note}
{sections}
<script>
// One control per row: every video of the row starts from its first frame at once, and all start again
// together when the longest ends, so frame k of one clip is beside frame k of the others.
document.querySelectorAll("button.sync").forEach(button => {{
  const videos = Array.from(button.closest("h2").nextElementSibling.querySelectorAll("video"));
  const restart = () => videos.forEach(v => {{ v.currentTime = 0; v.play(); }});
  videos.forEach(v => v.addEventListener("ended", () => {{ if (videos.every(w => w.ended || w.paused)) restart(); }}));
  button.addEventListener("click", () => {{
    if (videos.some(v => !v.paused)) {{ videos.forEach(v => v.pause()); button.textContent = "play together"; }}
    else {{ restart(); button.textContent = "pause"; }}
  }});
}});
document.querySelectorAll("button.sync").forEach(button => button.click());  // start every row together
</script>
</body></html>
"""
