"""Speed levers that are not worker keys (``conf/speed``): one validated value for a run.

The worker's preset says what to sample; these say how the harness makes sampling
cheaper: guidance truncation, both guidance passes as one batch, a cache (diffusers' hooks,
MagCache with ratios the harness calibrates, cache-dit's DBCache), the attention backend,
compilation, precision and quantization. One frozen :class:`Speed` travels from the config
through the plan to each generation request and into MLflow's params, so a new lever is added
in one place.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # settings are checked before torch is imported (a bad one is refused in under 2 s)
    import torch

CACHES = ("none", "first_block", "taylorseer", "magcache", "dbcache")
COMPILE_MODES = ("off", "regional", "full")
PRECISIONS = ("worker", "bfloat16")
CFG_MODES = ("separate", "batched")
QUANTS = ("none", "int8_weight_only", "float8_dynamic")


@dataclass(frozen=True)
class Speed:
    """The levers of one run; the defaults change nothing."""

    guidance_stop: float = 1.0  # fraction of steps with guidance; later steps run one pass
    cache: str = "none"  # one of CACHES
    cache_threshold: float = 0.05  # first_block and dbcache: relative change below which the rest is reused
    cache_interval: int = 5  # taylorseer: steps between full computations
    attention: str = "native"  # diffusers attention backend (harness.pipeline.device.check_attention)
    compile: str = "off"  # one of COMPILE_MODES
    precision: str = "worker"  # the worker's transformer precision, or bfloat16 weights (one of PRECISIONS)
    cfg: str = "separate"  # both guidance passes as two transformer calls, or as one batch of two (CFG_MODES)
    magcache_threshold: float = 0.06  # magcache: accumulated error below which a step reuses the last residual
    magcache_k: int = 3  # magcache: at most this many steps skipped in a row
    magcache_retention: float = 0.2  # magcache: the first fraction of the steps is always computed
    quant: str = "none"  # torchao quantization of the transformer's linear layers (QUANTS)
    dbcache_taylorseer: int = 0  # dbcache: order of cache-dit's TaylorSeer calibrator (0: none, 1 or 2)

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
            **{key: node.get(key, default) for key, default in _DEFAULTS.items() if key != "guidance_stop"},
        )
        speed.check()
        return speed

    def check(self) -> None:
        """Raises ValueError for a choice or a setting out of its range, naming it and what is allowed."""
        for key, allowed in (("compile", COMPILE_MODES), ("precision", PRECISIONS), ("cfg", CFG_MODES),
                             ("quant", QUANTS), ("cache", CACHES)):  # fmt: skip
            if getattr(self, key) not in allowed:
                raise ValueError(f"speed.{key}={getattr(self, key)!r} is not allowed; allowed: {list(allowed)}")
        _fraction("magcache_threshold", self.magcache_threshold, 0, 10)
        _fraction("magcache_retention", self.magcache_retention, 0, 1)
        if isinstance(self.magcache_k, bool) or not isinstance(self.magcache_k, int) or self.magcache_k < 1:
            raise ValueError(f"speed.magcache_k={self.magcache_k!r} must be an integer >= 1 (steps skipped in a row)")
        if self.cache == "dbcache" and self.cfg == "batched":
            raise ValueError(
                "speed.cache='dbcache' with speed.cfg='batched' is not offered: cache-dit caches each guidance pass "
                "apart; use speed.cfg=separate"
            )
        self.check_cache()

    def check_cache(self) -> None:
        """Check the cache's own settings (without importing diffusers).

        Raises:
            ValueError: unknown cache, or a threshold/interval out of range.
        """
        if self.cache not in CACHES:
            raise ValueError(f"speed.cache={self.cache!r} is not allowed; allowed: {list(CACHES)}")
        if self.cache == "first_block" and not (_number(self.cache_threshold) and 0 < self.cache_threshold < 1):
            raise ValueError(f"speed.cache_threshold={self.cache_threshold!r} must be in (0, 1)")
        if self.cache == "dbcache":
            _fraction("cache_threshold", self.cache_threshold, 0, 1)
        if self.dbcache_taylorseer not in (0, 1, 2) or isinstance(self.dbcache_taylorseer, bool):
            raise ValueError(
                f"speed.dbcache_taylorseer={self.dbcache_taylorseer!r} must be 0 (no calibrator), 1 or 2 (the order "
                "of cache-dit's TaylorSeer calibrator)"
            )
        interval = self.cache_interval
        if self.cache == "taylorseer" and (isinstance(interval, bool) or not isinstance(interval, int) or interval < 2):
            raise ValueError(f"speed.cache_interval={interval!r} must be an integer >= 2")

    def params(self) -> dict[str, Any]:
        """The levers as MLflow params."""
        return asdict(self)

    def cache_config(self, steps: int, mag_ratios: Sequence[float] | None = None) -> Any:
        """The diffusers cache config these levers ask for, or None (dbcache is cache-dit's, not diffusers').

        Args:
            steps: the generation's steps (MagCache interpolates its ratios to them).
            mag_ratios: MagCache's calibrated magnitude ratios; None calibrates (computes every step).

        Raises:
            ValueError: unknown cache, or a threshold/interval out of range.
        """
        self.check_cache()
        if self.cache in ("none", "dbcache"):
            return None
        import torch
        from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

        if self.cache == "first_block":
            return FirstBlockCacheConfig(threshold=self.cache_threshold)
        if self.cache == "magcache":
            return MagCacheConfig(
                threshold=self.magcache_threshold, max_skip_steps=self.magcache_k,
                retention_ratio=self.magcache_retention, num_inference_steps=steps,
                mag_ratios=None if mag_ratios is None else list(mag_ratios), calibrate=mag_ratios is None,
            )  # fmt: skip
        # The default identifiers are full-matched ("^blocks.*attn"): Wan's blocks.N.attn1
        # never matches, so the default caches nothing on Wan. Predict whole blocks instead.
        return TaylorSeerCacheConfig(
            cache_interval=self.cache_interval,
            taylor_factors_dtype=torch.float32,
            cache_identifiers=[r"^blocks\.\d+$"],
        )


_DEFAULTS = asdict(Speed())


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _fraction(key: str, value: Any, low: float, high: float) -> None:
    if not _number(value) or not low <= value <= high:
        raise ValueError(f"speed.{key}={value!r} must be a number from {low:g} to {high:g}")


def check_compile_mode(compile_mode: str) -> None:
    """Raises ValueError unless ``compile_mode`` is one of COMPILE_MODES."""
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"speed.compile={compile_mode!r} is not allowed; allowed: {list(COMPILE_MODES)}")


def check_quant_here(cfg: Any) -> None:
    """``speed.quant`` against this machine's device, importing torch alone (about 2 s), not diffusers (about 9).

    Raises:
        ValueError: as :func:`check_quant`, or a ``model.device`` this machine does not have.
    """
    quant, device = str(cfg.speed.quant), str(cfg.model.get("device", "auto"))
    if quant == "none":
        return
    if quant == "float8_dynamic" and (device == "cpu" or (device == "auto" and _no_cuda_here())):
        _check_torchao(quant)
        raise ValueError(_float8_refusal("a CPU"))  # known without torch: refused in about a second
    from harness.pipeline.device import resolve_device

    check_quant(quant, resolve_device(device))


def _no_cuda_here(root: Path = Path("/")) -> bool:
    """True where torch cannot see a GPU: Linux with no GPU driver's trace (checked without importing torch).

    Any of these says there may be one: an NVIDIA device node, the NVIDIA driver loaded (``/proc/driver/nvidia``,
    there before a first CUDA call makes the nodes on a headless host), WSL's ``/dev/dxg``, ROCm's ``/dev/kfd``
    (torch's ROCm build reports AMD GPUs as CUDA). Elsewhere than Linux, torch is asked.
    """
    if not sys.platform.startswith("linux"):
        return False
    markers = [root / "proc/driver/nvidia", root / "dev/dxg", root / "dev/kfd"]
    return not any(m.exists() for m in markers) and not any((root / "dev").glob("nvidia[0-9]*"))


def _check_torchao(quant: str) -> None:
    if importlib.util.find_spec("torchao") is None:  # found, not imported: importing torchao takes seconds
        raise ValueError(f"speed.quant={quant!r} needs torchao: pip install -e '.[quant]'")


def _float8_refusal(where: str) -> str:
    return (
        f"speed.quant='float8_dynamic' needs float8 matmuls (a GPU of sm89 or later: Ada, Hopper), not {where}; "
        f"allowed here: none, int8_weight_only"
    )


def check_quant(quant: str, device: "torch.device") -> None:
    """Refuse a quantization this device cannot run, before any run opens.

    Raises:
        ValueError: float8 on a CPU or on a GPU older than sm89 (Ada, Hopper); torchao missing.
    """
    if quant == "none":
        return
    import torch

    _check_torchao(quant)
    if quant == "float8_dynamic":
        capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
        if capability is None or capability < (8, 9):
            raise ValueError(_float8_refusal("a CPU" if capability is None else f"sm{capability[0]}{capability[1]}"))
