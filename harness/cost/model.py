"""The cost model: time = fixed + steps x passes x (a + b x tokens), fitted by least squares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class CostModel:
    """A fitted cost model and its relative errors on the points it was fitted to."""

    fixed: float  # seconds per video whatever the steps (text encoding, decoding, set-up)
    per_pass: float  # seconds per transformer pass, whatever the tokens
    per_token: float  # seconds per transformer pass and token
    errors: tuple[float, ...]  # |predicted - measured| / measured, per point

    def predict(self, steps: float, passes: float, tokens: float) -> float:
        """Predicted seconds per video."""
        return self.fixed + steps * passes * (self.per_pass + self.per_token * tokens)

    @property
    def median_error(self) -> float:
        return float(np.median(self.errors))

    @property
    def max_error(self) -> float:
        return float(np.max(self.errors))


def fit_cost_model(points: Sequence[tuple[int, int, int, float]]) -> CostModel:
    """Fit the cost model to measured points.

    Args:
        points: ``(steps, passes, tokens, seconds per video)`` each.

    Returns:
        The fitted model.
    """
    design = np.array([[1.0, steps * passes, steps * passes * tokens] for steps, passes, tokens, _ in points])
    target = np.array([seconds for *_, seconds in points])
    (fixed, per_pass, per_token), *_ = np.linalg.lstsq(design, target, rcond=None)
    errors = np.abs(design @ np.array([fixed, per_pass, per_token]) - target) / target
    return CostModel(float(fixed), float(per_pass), float(per_token), tuple(float(e) for e in errors))
