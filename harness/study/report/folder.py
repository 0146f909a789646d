"""Where a study's report and export go, and the rule that keeps them from replacing what is worth keeping.

``harness.report`` and ``harness.select`` write into ``study_dir``: by default a folder of the study's own
under the untracked ``outputs/studies/``, so running them as the README shows never touches a committed file.
A committed folder (``study_dir=experiments/video_fast``) is written only when named; and a folder that
already holds another study's report, or a bigger study's, is replaced only with ``replace=true``.
``study.json`` in the folder records whose report it holds.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

STAMP = "study.json"
WRITTEN = ("report.md", "report.html", "video_fast.yaml")  # a folder holding any of them holds a report or export


def study_folder(cfg: DictConfig, study_name: str, trials: int) -> Path:
    """The folder to write a study's report or export into, checked against what it holds already.

    Args:
        cfg: composed config (``study_dir``, ``replace``).
        study_name: the study written.
        trials: how many trials it holds now.

    Returns:
        The folder (created), stamped with the study's name and trial count.

    Raises:
        ValueError: the folder holds another study's report, a bigger study's, or one of unknown origin,
            and ``replace`` is not true.
    """
    folder = Path(str(cfg.study_dir))
    if not bool(cfg.replace):
        _check(folder, study_name, trials)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STAMP).write_text(json.dumps({"study": study_name, "trials": trials}, indent=2) + "\n")
    return folder


def _check(folder: Path, study_name: str, trials: int) -> None:
    stamp = folder / STAMP
    held = stamp.exists() and json.loads(stamp.read_text())
    if held and held.get("study") == study_name and held.get("trials", 0) <= trials:
        return
    if held:
        what = f"study {held.get('study')!r} with {held.get('trials')} trials"
    elif any((folder / name).exists() for name in WRITTEN):
        what = "a report or export of unknown origin (no study.json)"
    else:
        return
    raise ValueError(
        f"study_dir={str(folder)!r} holds {what}; writing study {study_name!r} ({trials} trials) there would "
        f"replace it: pick another study_dir, or pass replace=true"
    )
