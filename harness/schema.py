"""Types of the simple config groups, as Hydra structured configs: a value of the wrong type is refused when the
config is composed (``timing.repeats=abc``), naming the key; ranges and Wan's own rules stay in
:mod:`harness.checks`.

Each group's YAML lists its schema first (``defaults: [/schema/timing@_here_, _self_]``), so the YAML keeps its
comments and values and the dataclass only says what type each key holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class TimingSchema:
    """``conf/timing``: how each preset is timed."""

    warmup: bool = True
    warmup_steps: int = 2
    repeats: int = 1
    threads: Any = "auto"  # "auto" or an integer
    noise_bound: float = 0.1
    pair: bool = True


@dataclass
class QualitySchema:
    """``conf/quality``: what is scored."""

    clip: bool = True
    fidelity: bool = True
    psnr_cap_db: float = 100.0


@dataclass
class TrackingSchema:
    """``conf/tracking``: where and what MLflow logs."""

    uri: Optional[str] = None
    experiment: Optional[str] = None
    fps: int = 16
    video: bool = True
    side_by_side: bool = True
    grid_frames: int = 8


SCHEMAS = {"timing": TimingSchema, "quality": QualitySchema, "tracking": TrackingSchema}


def register() -> None:
    """Store the schemas where the groups' YAMLs find them (``/schema/<group>``); idempotent."""
    store = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        store.store(group="schema", name=group, node=schema)
