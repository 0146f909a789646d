"""The cost model: time = fixed + steps x passes x (a + b x tokens), fitted by non-negative least squares."""

from __future__ import annotations

import itertools
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
    """Non-negative least squares: every term is a cost. Fitted to a few noisy points, a free fit can make one term
    negative and predict that a 250-step video takes no time at all (seen in CI on four presets).

    Exact for this model's three terms: the best fit among those on every subset of the terms whose coefficients
    all come out >= 0; the fullest subset wins a tie. Minimum-norm per subset: at one token count the token
    column is a multiple of the pass column.
    """
    columns = design.shape[1]
    best, best_residual = np.zeros(columns), np.inf
    for size in range(columns, 0, -1):
        for subset in itertools.combinations(range(columns), size):
            coefficients = np.linalg.lstsq(design[:, subset], target, rcond=None)[0]
            residual = float(np.sum((design[:, subset] @ coefficients - target) ** 2))
            if (coefficients >= 0).all() and residual < best_residual * (1 - 1e-9):
                best, best_residual = np.zeros(columns), residual
                best[list(subset)] = coefficients
    return best
