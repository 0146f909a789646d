"""Where generation runs: device, precision, attention backend, and how the machine is named."""

from __future__ import annotations

import os
import platform

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_ATTENTION = ("native", "_native_math")
# CUDA backends that need no download: torch SDPA's own kernels, and flash-attn / FA3 / sage when installed.
CUDA_ATTENTION = ("native", "_native_flash", "_native_efficient", "_native_cudnn", "flash", "_flash_3", "sage")


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; otherwise the named device.

    Raises:
        ValueError: a device torch does not know, or cuda asked for where there is none.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"model.device={device!r} is not a torch device; allowed: auto, cpu, cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("model.device='cuda' but no CUDA device is available; use model.device=cpu or auto")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on cuda, float32 elsewhere; otherwise the named dtype.

    Raises:
        ValueError: a dtype outside float32, bfloat16, float16, or one this device cannot run.
    """
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype={dtype!r} is not allowed; allowed: auto, {', '.join(DTYPES)}")
    if device.type == "cpu" and dtype == "float16":
        raise ValueError(
            "model.dtype='float16' is not supported on cpu (half-precision kernels are missing "
            "or slow there); allowed on cpu: float32, bfloat16"
        )
    if device.type == "cuda" and dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"model.dtype='bfloat16' is not supported by {device_label(device)}; allowed here: float32, float16"
        )
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


def device_label(device: torch.device) -> str:
    """A readable name of the device, e.g. ``NVIDIA H100 80GB HBM3`` or ``CPU (2 cores, x86_64)``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def load_average() -> float | None:
    """The machine's one-minute load average (None where the system keeps none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def load_line(started: float | None) -> str:
    """How busy the machine was over a session: its load average when it started and now, against its cores."""
    now = load_average()
    if started is None or now is None:
        return ""
    return (
        f"Load average {started:.2f} when the session started and {now:.2f} when it ended, on {os.cpu_count()} "
        f"cores (the harness's own work counts for about 1)."
    )


def machine_name(device: torch.device) -> str:
    """A short, file-safe name of this machine, e.g. ``cpu-2cores`` or ``nvidia-h100-80gb-hbm3``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).lower().replace(" ", "-")[:40]
    return f"cpu-{os.cpu_count()}cores"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity), which can be fewer than the machine has."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def torch_threads(setting: object) -> int:
    """The intra-op threads a ``timing.threads`` setting asks for.

    Args:
        setting: ``auto`` (the CPUs this process may use) or an integer >= 1.

    Raises:
        ValueError: anything else.
    """
    if setting == "auto":
        return available_cpus()
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"timing.threads={setting!r} must be auto or an integer >= 1")
    return setting


def check_attention(backend: str, device: torch.device) -> None:
    """Check that an attention backend exists and can run on this device without downloads.

    Raises:
        ValueError: unknown backend, one that downloads kernels from a hub, one this device
            cannot run, or one whose package is missing; the message lists what is allowed.
    """
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    names = [b.value for b in AttentionBackendName if "hub" not in b.value]
    if backend not in names:
        raise ValueError(f"speed.attention={backend!r} is not a local diffusers attention backend; allowed: {names}")
    if device.type == "cpu" and backend not in CPU_ATTENTION:
        raise ValueError(f"speed.attention={backend!r} needs a GPU; allowed on cpu: {list(CPU_ATTENTION)}")
    try:
        _check_attention_backend_requirements(AttentionBackendName(backend))
    except (RuntimeError, ImportError) as error:
        raise ValueError(f"speed.attention={backend!r} is not available here: {str(error).splitlines()[0]}") from None
