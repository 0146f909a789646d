"""The worker's preset: its keys, validation, and the video shape it resolves to.

Wan's conventions (official Wan-Video/Wan2.1):
- ``size`` is ``width*height``: ``'480*832'`` is 480 wide, 832 high (portrait).
- frame counts are 4n+1; the official code makes ``(F-1)//4+1`` latent frames, so 83 asks
  for 81 frames and 64 for 61. diffusers would instead round 64 up to 65; the harness
  applies the official rule and passes diffusers a count it leaves alone.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

WORKER_KEYS = (
    "task",
    "size",
    "sample_steps",
    "sample_guide_scale",
    "sample_solver",
    "sample_shift",
    "frame_num",
    "enhance_prompt",
    "expected_time",
    "content_type",
    "file_extension",
)
SAMPLER_KEYS = ("sample_steps", "sample_solver", "sample_shift", "sample_guide_scale")
VAE_TEMPORAL_STRIDE = 4
SIZE_MULTIPLE = 16
MAX_STEPS = 1000  # the flow schedulers' training timesteps: more steps than that repeat timesteps
# Where every solver stays finite. Shift compresses the first steps' sigmas by 1/shift, so once
# sample_steps x sample_shift passes ~1000 consecutive steps round to the same of the scheduler's
# 1000 timesteps and UniPC and DPM++ fail (measured on each solver, steps 1-1000 x shift 1e-4-50:
# UniPC's last good step count is 998/shift). Tiny shifts make DPM++ fail below 1e-4.
MAX_STEPS_X_SHIFT = 990
MIN_SHIFT = 0.01
# Guidance multiplies the difference of two passes: the worker uses 6.5, Wan 2.1 5-6; the tiny model's
# videos stay finite up to 1e20 and overflow to NaN from 1e30, so 100 is far inside every model's range.
MAX_GUIDANCE = 100.0
MAX_FRAMES = 1001  # 250 latent frames; Wan 2.1 was trained on 81
MAX_SIDE = 1920  # Wan 2.1 generates up to 1280*720; larger sides are refused, not attempted
TASKS = ("t2v-1.3B", "t2v-14B")  # the text-to-video tasks of Wan 2.1, as the worker names them
FRAME_RULE = "official: latent frames (F-1)//4+1, generated (latent-1)*4+1"
_SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*\*\s*(\d+)\s*$")


def parse_size(size: Any) -> tuple[int, int]:
    """Parse a Wan ``size`` string.

    Args:
        size: ``'W*H'``, e.g. ``'480*832'`` (480 wide, 832 high).

    Returns:
        ``(width, height)``.

    Raises:
        ValueError: not of the form ``W*H``, or a side not a positive multiple of 16.
    """
    match = _SIZE_PATTERN.match(str(size))
    if not match:
        raise ValueError(f"preset.size={size!r} is not 'W*H' (width*height, e.g. '480*832' for portrait)")
    width, height = int(match.group(1)), int(match.group(2))
    for side_name, side in (("width", width), ("height", height)):
        if side > MAX_SIDE:
            raise ValueError(f"preset.size={size!r}: {side_name} {side} is above {MAX_SIDE}, the largest side allowed")
        if side < SIZE_MULTIPLE or side % SIZE_MULTIPLE:
            raise ValueError(
                f"preset.size={size!r}: {side_name} {side} must be a positive multiple of "
                f"{SIZE_MULTIPLE} (e.g. '480*832', '832*480', '384*640')"
            )
    return width, height


def official_frame_count(frame_num: int) -> int:
    """Frames the official Wan code generates when asked for ``frame_num``.

    Args:
        frame_num: requested frames (>= 1).

    Returns:
        ``((frame_num - 1) // 4) * 4 + 1``: 83 -> 81, 64 -> 61, 81 -> 81.
    """
    latent_frames = (frame_num - 1) // VAE_TEMPORAL_STRIDE + 1
    return (latent_frames - 1) * VAE_TEMPORAL_STRIDE + 1


def _as_int(key: str, value: Any, minimum: int, maximum: int) -> int:
    allowed = f"preset.{key}={value!r} must be an integer from {minimum} to {maximum}"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(allowed)
    try:
        number = float(value)
    except ValueError:
        raise ValueError(allowed) from None
    if not number.is_integer() or not minimum <= number <= maximum:
        raise ValueError(allowed)
    return int(number)


def _as_float(key: str, value: Any, minimum: float, maximum: float, why: str = "") -> float:
    bounds = f">= {minimum:g}" if maximum == math.inf else f"from {minimum:g} to {maximum:g}"
    allowed = f"preset.{key}={value!r} must be a number {bounds}" + (f" ({why})" if why else "")
    return finite_number(value, allowed, minimum, maximum)


def finite_number(value: Any, refusal: str, minimum: float = -math.inf, maximum: float = math.inf) -> float:
    """``value`` as a finite float in ``[minimum, maximum]`` (numeric strings from the command line accepted).

    Raises:
        ValueError: ``refusal``, when it is a boolean, not a number, not finite or out of range.
    """
    if isinstance(value, bool):
        raise ValueError(refusal)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(refusal) from None
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise ValueError(refusal)
    return number


def _shift(value: Any, steps: int) -> float:
    """The shift, within the range where every solver stays finite at this many steps."""
    why = (
        f"at {steps} steps: sample_steps x sample_shift <= {MAX_STEPS_X_SHIFT}, beyond which consecutive steps "
        f"share one of the scheduler's 1000 timesteps and UniPC and DPM++ fail"
    )
    return _as_float("sample_shift", value, MIN_SHIFT, round(MAX_STEPS_X_SHIFT / steps, 3), why)


@dataclass(frozen=True)
class Preset:
    """A validated worker preset (values typed, keys as in the worker)."""

    task: str
    size: str
    sample_steps: int
    sample_guide_scale: float
    sample_solver: str
    sample_shift: float
    frame_num: int
    enhance_prompt: bool
    expected_time: float
    content_type: str
    file_extension: str

    @property
    def width(self) -> int:
        return parse_size(self.size)[0]

    @property
    def height(self) -> int:
        return parse_size(self.size)[1]

    def to_worker(self) -> dict[str, Any]:
        """The preset in the worker's format (same keys, same order)."""
        return {key: getattr(self, key) for key in WORKER_KEYS}


def same_sampler(preset: Preset, reference: Preset) -> bool:
    """Whether a preset samples exactly as the reference does (steps, solver, shift, guidance)."""
    return all(getattr(preset, key) == getattr(reference, key) for key in SAMPLER_KEYS)


def _check_keys(raw: Mapping[str, Any]) -> None:
    missing = [key for key in WORKER_KEYS if key not in raw]
    if missing:
        raise ValueError(f"preset is missing key(s) {missing}; a preset has {list(WORKER_KEYS)}")
    unknown = [key for key in raw if key not in WORKER_KEYS]
    if unknown:
        raise ValueError(f"preset has unknown key(s) {unknown}; allowed: {list(WORKER_KEYS)}")


def _check_choices(raw: Mapping[str, Any], solvers: Mapping[str, Any]) -> None:
    if raw["task"] not in TASKS:
        raise ValueError(f"preset.task={raw['task']!r} is not a text-to-video task; allowed: {list(TASKS)}")
    parse_size(raw["size"])
    if str(raw["sample_solver"]) not in solvers:
        raise ValueError(
            f"preset.sample_solver={raw['sample_solver']!r} is not a known solver; allowed: {sorted(solvers)}"
        )
    if str(raw["file_extension"]) != "mp4":
        raise ValueError(f"preset.file_extension={raw['file_extension']!r}: only 'mp4' is written")
    if str(raw["content_type"]) != "video":
        raise ValueError(f"preset.content_type={raw['content_type']!r}: only 'video' is allowed")
    if not isinstance(raw["enhance_prompt"], bool):
        raise ValueError(f"preset.enhance_prompt={raw['enhance_prompt']!r} must be true or false")


def validate_preset(raw: Mapping[str, Any], solvers: Mapping[str, Any]) -> Preset:
    """Check a preset and type its values.

    Args:
        raw: the ``preset`` node (worker keys).
        solvers: the solver mapping (``conf/solver``); its keys are the allowed solvers.

    Returns:
        The typed preset.

    Raises:
        ValueError: a missing or unknown key, or a value outside what is allowed; the
            message names the key, the value and what is allowed.
    """
    _check_keys(raw)
    solver = str(raw["sample_solver"])
    _check_choices(raw, solvers)
    steps = _as_int("sample_steps", raw["sample_steps"], 1, MAX_STEPS)
    preset = Preset(
        task=str(raw["task"]),
        size=str(raw["size"]).replace(" ", ""),
        sample_steps=steps,
        sample_guide_scale=_as_float(
            "sample_guide_scale", raw["sample_guide_scale"], 0.0, MAX_GUIDANCE, "1 = no guidance; the worker uses 6.5"
        ),
        sample_solver=solver,
        sample_shift=_shift(raw["sample_shift"], steps),
        frame_num=_as_int("frame_num", raw["frame_num"], 1, MAX_FRAMES),
        enhance_prompt=raw["enhance_prompt"],
        expected_time=_as_float("expected_time", raw["expected_time"], 0.0, math.inf, "seconds"),
        content_type="video",
        file_extension="mp4",
    )
    if preset.enhance_prompt:
        raise ValueError(
            "preset.enhance_prompt=true is not supported: prompt extension rewrites each prompt with an LLM "
            "(Qwen or DashScope) that the harness does not run, so its videos would not be the worker's; "
            "set enhance_prompt: false"
        )
    return preset


@dataclass(frozen=True)
class VideoShape:
    """What a preset asks for and what the model generates."""

    width: int
    height: int
    num_frames: int
    frames_requested: int
    frames_official: int
    preset_width: int
    preset_height: int

    @property
    def generated(self) -> tuple[int, int, int]:
        """(width, height, frames) of the video the model makes."""
        return self.width, self.height, self.num_frames

    @property
    def output(self) -> dict[str, int]:
        """What the worker outputs: ``{"width", "height", "frames"}``."""
        return {"width": self.preset_width, "height": self.preset_height, "frames": self.frames_official}

    def seconds(self, fps: float) -> float:
        """Seconds of video the worker outputs: its frames at its frame rate."""
        return self.frames_official / fps

    def output_spec(self, fps: float) -> str:
        """What the worker outputs, e.g. ``480x832, 81 frames, 5.06 s``."""
        return f"{self.preset_width}x{self.preset_height}, {self.frames_official} frames, {self.seconds(fps):.2f} s"

    @property
    def scaled(self) -> bool:
        """Whether the model generates another size or length than the worker outputs (a small model's scale)."""
        return (self.width, self.height, self.num_frames) != (
            self.preset_width, self.preset_height, self.frames_official
        )  # fmt: skip

    def stands_for(self) -> str:
        """What a scaled model's video stands for, e.g. ``48x80 x 17 frames stand for 480x832 x 81``; or ``""``."""
        if not self.scaled:
            return ""
        return (
            f"{self.width}x{self.height} x {self.num_frames} frames stand for "
            f"{self.preset_width}x{self.preset_height} x {self.frames_official}"
        )

    def spec_change(self, reference: "VideoShape") -> str:
        """How this output differs from the reference's (``""`` when it does not)."""
        changes = []
        if (self.preset_width, self.preset_height) != (reference.preset_width, reference.preset_height):
            changes.append(
                f"size {reference.preset_width}x{reference.preset_height} -> {self.preset_width}x{self.preset_height}"
            )
        if self.frames_official != reference.frames_official:
            changes.append(f"frames {reference.frames_official} -> {self.frames_official}")
        return "; ".join(changes)


def _scale_side(side: int, factor: float) -> int:
    # Round half up to the nearest multiple of 16, at least 16 (diffusers' constraint).
    return max(SIZE_MULTIPLE, int(side / factor / SIZE_MULTIPLE + 0.5) * SIZE_MULTIPLE)


def resolve_shape(preset: Preset, spatial_scale: float = 1, temporal_scale: float = 1, warn: bool = True) -> VideoShape:
    """Resolve a preset's size and frames to the video the model generates.

    The official frame rule applies first (warned when it changes the count); then a
    model's scale divides width and height (rounded to multiples of 16) and latent frames
    (at least 1), so small models keep the presets' relative costs.

    Args:
        preset: a validated preset.
        spatial_scale: divisor of width and height (1 for the real model).
        temporal_scale: divisor of latent frames (1 for the real model).
        warn: log a warning when the frame rule changes the count.

    Returns:
        The resolved shape.
    """
    for name, value in (("spatial", spatial_scale), ("temporal", temporal_scale)):
        if not value or value <= 0:
            raise ValueError(f"model.scale.{name}={value!r} must be a number > 0")
    width, height = parse_size(preset.size)
    frames_official = official_frame_count(preset.frame_num)
    if warn and frames_official != preset.frame_num:
        log.warning(
            "frame_num=%d is not 4n+1: generating %d frames (%s)",
            preset.frame_num,
            frames_official,
            FRAME_RULE,
        )
    latent_frames = (frames_official - 1) // VAE_TEMPORAL_STRIDE + 1
    if temporal_scale != 1:
        latent_frames = max(1, int(latent_frames / temporal_scale + 0.5))
    if spatial_scale != 1:
        width, height = _scale_side(width, spatial_scale), _scale_side(height, spatial_scale)
    return VideoShape(
        width=width,
        height=height,
        num_frames=(latent_frames - 1) * VAE_TEMPORAL_STRIDE + 1,
        frames_requested=preset.frame_num,
        frames_official=frames_official,
        preset_width=parse_size(preset.size)[0],
        preset_height=parse_size(preset.size)[1],
    )


def read_preset_file(path: str | Path) -> dict[str, Any]:
    """Read a worker preset from YAML or JSON (keys starting with ``_`` are notes, skipped).

    Args:
        path: a ``.yaml``/``.yml`` or ``.json`` file holding the worker's keys.

    Returns:
        The preset's keys and values.

    Raises:
        ValueError: missing or unreadable file, unknown suffix, not text, or not a mapping.
    """
    import json

    import yaml

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"preset_file={str(path)!r} does not exist")
    if file.suffix not in (".yaml", ".yml", ".json"):
        raise ValueError(f"preset_file={str(path)!r} must be .yaml, .yml or .json")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"preset_file={str(path)!r} is not a text file (not UTF-8): a worker preset is YAML or JSON"
        ) from None
    except OSError as error:
        raise ValueError(f"preset_file={str(path)!r} cannot be read ({error.strerror})") from None
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        problem = " ".join(str(error).split())  # YAML's messages span lines; one line here
        raise ValueError(f"preset_file={str(path)!r} is not valid {file.suffix[1:].upper()}: {problem}") from None
    if not isinstance(data, dict):
        raise ValueError(f"preset_file={str(path)!r} must hold a mapping of the worker's keys")
    return {key: value for key, value in data.items() if not str(key).startswith("_")}


def python_entry(name: str, values: dict[str, Any], notes: list[str]) -> str:
    """The preset as an entry of the worker's Python preset dict: ``'video_fast': {...},`` with Python literals."""
    lines = [f"# {line}" for line in notes] + [f"{name!r}: {{"]
    lines += [f"    {key!r}: {value!r}," for key, value in values.items()]
    return "\n".join([*lines, "},"]) + "\n"


def write_preset_files(preset: Preset, folder: Path, name: str, notes: list[str]) -> tuple[Path, Path]:
    """Write a preset as ``<name>.yaml``, ``<name>.json`` and ``<name>.py`` in the worker's key format.

    The ``.py`` file is an entry that pastes into the worker's preset dict unchanged.

    Args:
        preset: the preset.
        folder: destination folder (created).
        name: file stem, e.g. ``video_fast``.
        notes: lines for the reader (comments in YAML and Python, a ``_notes`` list in JSON).

    Returns:
        The YAML and JSON paths (the Python one lies beside them).
    """
    import json

    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    values = preset.to_worker()
    yaml_path, json_path = folder / f"{name}.yaml", folder / f"{name}.json"
    header = "".join(f"# {line}\n" for line in notes)
    yaml_path.write_text(header + yaml.safe_dump(values, sort_keys=False))
    json_path.write_text(json.dumps({**values, "_notes": notes}, indent=2) + "\n")
    (folder / f"{name}.py").write_text(python_entry(name, values, notes))
    return yaml_path, json_path
