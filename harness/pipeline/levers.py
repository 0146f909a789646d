"""Speed levers that are not worker keys (``conf/speed``): one validated value for a run.

The worker's preset says what to sample; these say how the harness makes sampling
cheaper: guidance truncation, a diffusers cache, the attention backend and compilation.
One frozen :class:`Speed` travels from the config through the plan to each generation
request and into MLflow's params, so a new lever is added in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

CACHES = ("none", "first_block", "taylorseer")
COMPILE_MODES = ("off", "regional", "full")


@dataclass(frozen=True)
class Speed:
    """The levers of one run; the defaults change nothing."""

    guidance_stop: float = 1.0  # fraction of steps with guidance; later steps run one pass
    cache: str = "none"  # one of CACHES
    cache_threshold: float = 0.05  # first_block: relative change of the first block's output that reuses the rest
    cache_interval: int = 5  # taylorseer: steps between full computations
    attention: str = "native"  # diffusers attention backend (harness.pipeline.device.check_attention)
    compile: str = "off"  # one of COMPILE_MODES

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> "Speed":
        """Validate ``cfg.speed``.

        Args:
            node: the ``speed`` config node.

        Returns:
            The levers.

        Raises:
            ValueError: a value out of its range, named with what is allowed.
        """
        stop = node["guidance_stop"]
        if isinstance(stop, bool) or not isinstance(stop, (int, float)) or not 0 < stop <= 1:
            raise ValueError(
                f"speed.guidance_stop={stop!r} must be a fraction of the steps in (0, 1] (1 = guide every step)"
            )
        speed = cls(
            guidance_stop=float(stop),
            cache=str(node["cache"]),
            cache_threshold=node["cache_threshold"],
            cache_interval=node["cache_interval"],
            attention=str(node["attention"]),
            compile=str(node["compile"]),
        )
        check_compile_mode(speed.compile)
        speed.check_cache()
        return speed

    @property
    def changes_output(self) -> bool:
        """Whether the video differs from the plain sampler's (truncated guidance or a cache).

        Attention backends and compilation compute the same function (up to float noise).
        """
        return self.guidance_stop < 1.0 or self.cache != "none"

    def params(self) -> dict[str, Any]:
        """The levers as MLflow params."""
        return asdict(self)

    def check_cache(self) -> None:
        """Check the cache settings (without importing diffusers).

        Raises:
            ValueError: unknown cache, or a threshold/interval out of range.
        """
        if self.cache not in CACHES:
            raise ValueError(f"speed.cache={self.cache!r} is not a cache; allowed: {list(CACHES)}")
        threshold, interval = self.cache_threshold, self.cache_interval
        if self.cache == "first_block" and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1
        ):
            raise ValueError(f"speed.cache_threshold={threshold!r} must be in (0, 1)")
        if self.cache == "taylorseer" and (isinstance(interval, bool) or not isinstance(interval, int) or interval < 2):
            raise ValueError(f"speed.cache_interval={interval!r} must be an integer >= 2")

    def cache_config(self) -> Any:
        """The diffusers cache config these levers ask for, or None.

        Raises:
            ValueError: unknown cache, or a threshold/interval out of range.
        """
        self.check_cache()
        if self.cache == "none":
            return None
        import torch
        from diffusers import FirstBlockCacheConfig, TaylorSeerCacheConfig

        if self.cache == "first_block":
            return FirstBlockCacheConfig(threshold=self.cache_threshold)
        # The default identifiers are full-matched ("^blocks.*attn"): Wan's blocks.N.attn1
        # never matches, so the default caches nothing on Wan. Predict whole blocks instead.
        return TaylorSeerCacheConfig(
            cache_interval=self.cache_interval,
            taylor_factors_dtype=torch.float32,
            cache_identifiers=[r"^blocks\.\d+$"],
        )


def check_compile_mode(compile_mode: str) -> None:
    """Raises ValueError unless ``compile_mode`` is one of COMPILE_MODES."""
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"speed.compile={compile_mode!r} is not allowed; allowed: {list(COMPILE_MODES)}")
