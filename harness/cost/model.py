"""The cost model: time = fixed + steps x passes x (a + b x tokens), fitted by non-negative least squares."""

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
    loo_errors: tuple[float, ...] = ()  # the same, each point predicted by a fit to the others

    def predict(self, steps: float, passes: float, tokens: float) -> float:
        """Predicted seconds per video."""
        return self.fixed + steps * passes * (self.per_pass + self.per_token * tokens)

    @property
    def median_error(self) -> float:
        return float(np.median(self.errors))

    @property
    def max_error(self) -> float:
        return float(np.max(self.errors))

    @property
    def loo_error(self) -> float:
        """The median leave-one-out relative error: how far off it is on a point it was not fitted to
        (in-sample errors flatter a model fitted to few points)."""
        return float(np.median(self.loo_errors)) if self.loo_errors else float("inf")


def fit_cost_model(points: Sequence[tuple[int, int, int, float]]) -> CostModel:
    """Fit the cost model to measured points.

    Args:
        points: ``(steps, passes, tokens, seconds per video)`` each.

    Returns:
        The fitted model.
    """
    design = np.array([[1.0, steps * passes, steps * passes * tokens] for steps, passes, tokens, _ in points])
    target = np.array([seconds for *_, seconds in points])
    coefficients = _least_squares(design, target)
    errors = np.abs(design @ coefficients - target) / target
    loo = []
    for left_out in range(len(target)):
        keep = np.arange(len(target)) != left_out
        predicted = design[left_out] @ _least_squares(design[keep], target[keep])
        loo.append(abs(predicted - target[left_out]) / target[left_out])
    fixed, per_pass, per_token = (float(c) for c in coefficients)
    return CostModel(fixed, per_pass, per_token, tuple(float(e) for e in errors), tuple(float(e) for e in loo))


def _least_squares(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Non-negative least squares (``scipy.optimize.nnls``): every term is a cost. Fitted to a few noisy points, a
    free fit can make one term negative and predict that a 250-step video takes no time at all (seen in CI on four
    presets). The columns are scaled to a common size first (seconds, steps x passes, and that x tokens differ by
    orders of magnitude), then the coefficients scaled back.
    """
    from scipy.optimize import nnls  # scipy.optimize takes a third of a second to import: not to check settings

    scale = np.abs(design).max(axis=0)
    scale[scale == 0] = 1.0
    coefficients, _ = nnls(design / scale, target)
    return coefficients / scale
