"""Clocks that can be trusted: device-synchronised stage timers, step clocks, peak memory."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psutil
import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock read after it includes that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    """A synchronised ``perf_counter`` reading."""
    synchronize(device)
    return time.perf_counter()


class StepClock:
    """A diffusers step-end callback that records when each denoising step ends."""

    def __init__(self, device: torch.device, start: float):
        self.device = device
        self.start = start
        self.ends: list[float] = []

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        self.ends.append(now(self.device))
        return callback_kwargs

    @property
    def step_times(self) -> list[float]:
        """Seconds per step; the first includes the loop's set-up (timesteps, latents)."""
        marks = [self.start, *self.ends]
        return [later - earlier for earlier, later in zip(marks, marks[1:])]


class PeakMemory:
    """Peak memory over a block: CUDA max allocated, or the process's RSS on CPU (sampled)."""

    def __init__(self, device: torch.device, interval_s: float = 0.01):
        self.device = device
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "process_rss"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        process = psutil.Process(os.getpid())
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, process.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, psutil.Process(os.getpid()).memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20
