"""A cache on the transformer for one generation: diffusers' hooks (first block, TaylorSeer, MagCache) or
cache-dit's DBCache. Caches hold state across steps, so each is enabled for one generation only and the
shared pipeline always starts clean. A MagCache without ratios calibrates them: it computes every step and
reports each step's magnitude ratio, which :func:`transformer_cache` hands back.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from harness.pipeline.levers import Speed

MAGCACHE_LOGGER = "diffusers.hooks.mag_cache"
MAGCACHE_RESULT = "MagCache Calibration Results:"


class _Ratios(logging.Handler):
    """Collects the ratio lists diffusers' MagCache logs at the end of a calibrating generation."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.found: list[list[float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(MAGCACHE_RESULT):
            self.found.append([float(x) for x in ast.literal_eval(message.removeprefix(MAGCACHE_RESULT).strip())])


@contextmanager
def transformer_cache(pipe: Any, speed: Speed, steps: int, mag_ratios: Sequence[float] | None) -> Iterator[list]:
    """Enable the cache ``speed`` asks for on ``pipe`` while the block runs.

    Yields:
        A list that holds, after a calibrating MagCache generation, the ratios of each pass (the conditional
        pass's first); empty otherwise.
    """
    if pipe.transformer.is_cache_enabled:
        pipe.transformer.disable_cache()
    calibrated: list[list[float]] = []
    if speed.cache == "dbcache":
        with _cache_dit(pipe, speed, steps):
            yield calibrated
        return
    config = speed.cache_config(steps, mag_ratios)
    if config is None:
        yield calibrated
        return
    pipe.transformer.enable_cache(config)
    try:
        if speed.cache == "magcache" and mag_ratios is None:
            with _calibration(calibrated):
                yield calibrated
        else:
            yield calibrated
    finally:
        pipe.transformer.disable_cache()


@contextmanager
def _calibration(into: list) -> Iterator[None]:
    """Capture MagCache's calibration results from its log (it prints them too, for people copying them)."""
    logger, handler = logging.getLogger(MAGCACHE_LOGGER), _Ratios()
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        into.extend(handler.found)


@contextmanager
def _cache_dit(pipe: Any, speed: Speed, steps: int) -> Iterator[None]:
    """cache-dit's DBCache: the first block computed every step, the rest reused while its residual changes less
    than ``speed.cache_threshold``, after a warm-up of the first ``speed.magcache_retention`` of the steps; with
    ``speed.dbcache_taylorseer`` its TaylorSeer calibrator forecasts the reused residual instead of repeating it."""
    try:
        import cache_dit
    except ImportError:
        raise ValueError("speed.cache='dbcache' needs cache-dit: pip install -e '.[cache-dit]'") from None
    warmup = max(1, round(speed.magcache_retention * steps))
    config = cache_dit.DBCacheConfig(
        Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=speed.cache_threshold,
        max_warmup_steps=warmup, num_inference_steps=steps,
    )  # fmt: skip
    calibrator = (
        cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=speed.dbcache_taylorseer)
        if speed.dbcache_taylorseer
        else None
    )
    with contextlib.redirect_stdout(io.StringIO()):
        cache_dit.enable_cache(pipe.transformer, cache_config=config, calibrator_config=calibrator)
    try:
        yield
    finally:
        cache_dit.disable_cache(pipe.transformer)
