"""The transformer passes a worker runs, over diffusers' ``WanPipeline`` unchanged.

- :class:`WorkerWanPipeline` is ``WanPipeline`` with one rule made switchable: which steps run the
  unconditional pass. ``WanPipeline`` runs it only when guidance > 1; the official loop on every step whatever
  the scale; guidance truncation (``speed.guidance_stop``) stops it after the first steps. Everything else,
  the denoising loop included, is ``WanPipeline``'s own.
- :func:`official_precision` runs the transformer as the official code does on CUDA: float32 weights under
  bfloat16 autocast, its prediction returned in float32 (``WanModel`` returns ``.float()``), while the
  scheduler, the guidance sum and the VAE stay in float32 (the harness switches it on on CUDA only; a test
  runs it on the CPU, where autocast works alike).
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
        return not self.guidance_stopped and (self.guide_always or self.guidance_scale > 1.0)


class _BFloat16Autocast(ModelHook):
    """The forward under bfloat16 autocast on the module's device, its outputs cast back to float32."""

    def __init__(self, device_type: str):
        super().__init__()
        self.device_type = device_type

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
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
    registry.register_hook(_BFloat16Autocast(next(transformer.parameters()).device.type), AUTOCAST_HOOK)
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


BATCHED_HOOK = "harness_batched_guidance"


class _BatchedGuidance(ModelHook):
    """On a guided step the conditional call runs both passes as one batch of two; the unconditional call that
    follows returns the half already computed. Caches see one call of batch two per step: both halves always
    skip or compute together."""

    def __init__(self, pipe: WanPipeline, negative_embeds: torch.Tensor):
        super().__init__()
        self.pipe, self.negative = pipe, negative_embeds
        self.stash: tuple | None = None
        self.batched = False  # whether the last call was a batch of two
        self.step = 0  # conditional calls so far: the step's index

    def _afresh(self, module: torch.nn.Module, step: int, *args: Any, **kwargs: Any) -> Any:
        """The call with every cache reset; resetting clears the call's cache context, so it is set again."""
        HookRegistry.check_if_exists_or_initialize(module).reset_stateful_hooks()
        sigmas, steps = self.pipe.scheduler.sigmas, len(self.pipe.scheduler.timesteps)
        with module.cache_context("cond", step_index=step, sigma=float(sigmas[step]), num_inference_steps=steps):
            return self.fn_ref.original_forward(*args, **kwargs)

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        forward = self.fn_ref.original_forward
        if self.stash is not None:  # the pipeline's unconditional call of this step
            output, self.stash = self.stash, None
            return output
        step, self.step = self.step, self.step + 1
        if not self.pipe.do_classifier_free_guidance:
            if self.batched:  # guidance stopped: a cache's state holds a batch of two, so it starts afresh
                self.batched = False
                return self._afresh(module, step, *args, **kwargs)
            return forward(*args, **kwargs)
        self.batched = True
        both = dict(kwargs)
        both["hidden_states"] = torch.cat([kwargs["hidden_states"]] * 2)
        both["timestep"] = torch.cat([kwargs["timestep"]] * 2)
        text = kwargs["encoder_hidden_states"]
        both["encoder_hidden_states"] = torch.cat([text, self.negative.to(text.dtype)])
        output = forward(*args, **both)
        sample = output[0] if isinstance(output, tuple) else output.sample
        conditional, unconditional = sample.chunk(2)
        self.stash = (unconditional,)
        return (conditional,) if isinstance(output, tuple) else type(output)(sample=conditional)


@contextmanager
def batched_guidance(pipe: WanPipeline, negative_embeds: torch.Tensor | None, enabled: bool) -> Iterator[None]:
    """While the block runs, each guided step's two transformer passes are one call of batch two."""
    if not enabled or negative_embeds is None:
        yield
        return
    registry = HookRegistry.check_if_exists_or_initialize(pipe.transformer)
    registry.register_hook(_BatchedGuidance(pipe, negative_embeds), BATCHED_HOOK)
    try:
        yield
    finally:
        registry.remove_hook(BATCHED_HOOK, recurse=False)
