"""The transformer passes a worker runs, over diffusers' ``WanPipeline`` unchanged.

- :class:`WorkerWanPipeline` is ``WanPipeline`` with one rule made switchable: which steps run the
  unconditional pass. ``WanPipeline`` runs it only when guidance > 1; the official loop on every step whatever
  the scale; guidance truncation (``speed.guidance_stop``) stops it after the first steps. Everything else,
  the denoising loop included, is ``WanPipeline``'s own.
- :func:`official_precision` runs the transformer as the official code does on CUDA: float32 weights under
  bfloat16 autocast, its prediction returned in float32 (``WanModel`` returns ``.float()``), while the
  scheduler, the guidance sum and the VAE stay in float32.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from diffusers import WanPipeline
from diffusers.hooks import HookRegistry, ModelHook

AUTOCAST_HOOK = "harness_official_autocast"


class WorkerWanPipeline(WanPipeline):
    """``WanPipeline`` whose guided steps run the unconditional pass whenever the worker's loop does.

    Attributes:
        guide_always: run the unconditional pass at any guidance scale (the official loop), not only above 1.
        guidance_stopped: set by a step-end callback to stop the unconditional pass for the remaining steps.
    """

    guide_always = False
    guidance_stopped = False

    @property
    def do_classifier_free_guidance(self) -> bool:
        # the loop reads this on every step; WanPipeline's own rule is guidance > 1
        return not self.guidance_stopped and (self.guide_always or self._guidance_scale > 1.0)


class _BFloat16Autocast(ModelHook):
    """The forward under CUDA bfloat16 autocast, its outputs cast back to float32."""

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            output = self.fn_ref.original_forward(*args, **kwargs)
        if isinstance(output, tuple):
            return tuple(item.float() if torch.is_tensor(item) else item for item in output)
        output.sample = output.sample.float()
        return output


@contextmanager
def official_precision(transformer: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """While the block runs, the transformer's forward runs under bfloat16 autocast (when ``enabled``)."""
    if not enabled:
        yield
        return
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.register_hook(_BFloat16Autocast(), AUTOCAST_HOOK)
    try:
        yield
    finally:
        registry.remove_hook(AUTOCAST_HOOK, recurse=False)


@contextmanager
def guided_passes(pipe: WorkerWanPipeline, guide_always: bool) -> Iterator[None]:
    """While the block runs, the pipeline guides as the worker does; truncation may stop it mid-way."""
    pipe.guide_always, pipe.guidance_stopped = guide_always, False
    try:
        yield
    finally:
        pipe.guide_always, pipe.guidance_stopped = False, False
