"""A local model folder, checked file by file before torch loads it (no heavy import here).

A folder copied in part, a download cut short or a file overwritten makes ``from_pretrained``
fail deep inside diffusers or safetensors, with a message that names no file. Here every
component ``model_index.json`` lists must be there, every JSON file must parse, and every
safetensors file must hold the tensors its header promises, so the error names the file.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
CONFIG_FILES = ("config.json", "scheduler_config.json")
HEADER_LIMIT = 100_000_000  # safetensors' own limit on a header's size


class ModelUnavailableError(ValueError):
    """The model's weights are neither on disk nor reachable, or a file of a local folder is missing or corrupt."""


def _safetensors_problem(file: Path) -> str | None:
    """Why a safetensors file cannot be loaded (garbage header, cut short), or None when it is whole."""
    size = file.stat().st_size
    with file.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"is truncated ({size} bytes, not even a header)"
        length = struct.unpack("<Q", head)[0]
        if length > min(HEADER_LIMIT, size - 8):
            return "is truncated or not a safetensors file (its header does not fit in it)"
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, ValueError):
            return "is not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "is not a safetensors file (its header is not a table of tensors)"
    tensors = [entry for key, entry in header.items() if key != "__metadata__" and isinstance(entry, dict)]
    try:
        ends = [int(entry["data_offsets"][1]) for entry in tensors]
    except (KeyError, IndexError, TypeError, ValueError):
        return "is not a safetensors file (its header lists no tensor offsets)"
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        return f"is truncated: {size} bytes of the {expected} its header promises"
    return None


def _json_problem(file: Path) -> str | None:
    try:
        json.loads(file.read_text())
    except (UnicodeDecodeError, ValueError) as error:
        return f"is not valid JSON ({' '.join(str(error).split())[:120]})"
    return None


def _weights(folder: Path) -> list[Path]:
    """The weight files of a component: the shards its index lists, else the files it holds."""
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        shards = json.loads(indexes[0].read_text()).get("weight_map", {}).values()
        return [folder / name for name in sorted(set(shards))]
    return sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)


def indexes_name(folder: Path) -> str:
    """The name of a component's weight index (sharded weights), for messages."""
    return next((p.name for p in sorted(folder.glob("*.safetensors.index.json"))), "the weight index")


def component_problem(folder: Path, label: str) -> str | None:
    """What is wrong with one component folder (``vae/``, ``tokenizer/``...) or a transformers model folder.

    Args:
        folder: the folder.
        label: how its files are named in the message (``vae/``, or ``""`` for the model's own folder).

    Returns:
        ``<file> is ...`` naming the first missing or corrupt file, or None when it looks whole.
    """
    if not folder.is_dir():
        return f"{label or folder.name} is missing"
    for file in sorted(folder.glob("*.json")):
        if problem := _json_problem(file):
            return f"{label}{file.name} {problem}"
    if not (folder / "config.json").is_file():
        return None  # a tokenizer or scheduler holds no weights (a scheduler's config is checked by the caller)
    try:
        weights = _weights(folder)
    except (ValueError, AttributeError):
        return f"{label}{indexes_name(folder)} is not a valid weight index"
    if not weights:
        return f"{label or 'the folder'} holds config.json but no weights file ({', '.join(WEIGHT_SUFFIXES)})"
    for file in weights:
        if not file.is_file():
            return f"{label}{file.name} is missing"
        if file.suffix == ".safetensors" and (problem := _safetensors_problem(file)):
            return f"{label}{file.name} {problem}"
    return None


def check_pipeline_folder(folder: Path, setting: str) -> None:
    """Check a local diffusers pipeline folder (``model_index.json`` and every component it lists).

    Args:
        folder: the folder ``model.path`` names.
        setting: the setting to name in the error, e.g. ``model.path``.

    Raises:
        ModelUnavailableError: naming the missing or corrupt file.
    """
    index = folder / "model_index.json"
    fix = "copy or download the folder again (a model the harness builds: delete the folder, it is rebuilt)"
    if not index.is_file():
        raise ModelUnavailableError(f"{setting}='{folder}' has no model_index.json: it is not a pipeline folder; {fix}")
    if problem := _json_problem(index):
        raise ModelUnavailableError(f"{setting}='{folder}': model_index.json {problem}; {fix}")
    components = json.loads(index.read_text())
    if not isinstance(components, dict):
        raise ModelUnavailableError(f"{setting}='{folder}': model_index.json is not a table of components; {fix}")
    for name, spec in components.items():
        if name.startswith("_") or not isinstance(spec, list) or None in spec:
            continue
        problem = component_problem(folder / name, f"{name}/")
        if problem is None and name == "scheduler" and not (folder / name / "scheduler_config.json").is_file():
            problem = "scheduler/scheduler_config.json is missing"
        if problem:
            raise ModelUnavailableError(f"{setting}='{folder}': {problem}; {fix}")


def check_model_folder(folder: Path, setting: str) -> None:
    """Check a local transformers model folder (the CLIP scorer's): ``config.json`` and its weights.

    Raises:
        ModelUnavailableError: naming the missing or corrupt file.
    """
    fix = "copy or download the folder again (a model the harness builds: delete the folder, it is rebuilt)"
    if not (folder / "config.json").is_file():
        raise ModelUnavailableError(f"{setting}='{folder}' has no config.json: it is not a model folder; {fix}")
    if problem := component_problem(folder, ""):
        raise ModelUnavailableError(f"{setting}='{folder}': {problem}; {fix}")
