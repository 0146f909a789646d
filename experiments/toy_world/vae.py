"""Stage 1: train the video VAE (``diffusers.AutoencoderKLWan``) on toy-world clips.

Clips of 9 to 17 frames, so the causal cache between the VAE's 1 + 4 + 4 ... frame chunks
is trained (on 5-frame clips only, later chunks drift in colour). Afterwards the
per-channel mean and std of the encoded dataset go into the VAE config
(``latents_mean`` / ``latents_std``): ``WanPipeline`` decodes ``z * std + mean``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from tqdm import tqdm

from experiments.toy_world.data import MAIN_SIZE, VAE_SIZES, ThreadGovernor, clip_batch, pick_size, to_model_range
from harness.toy.adherence import adherence
from harness.toy.world import captions


def build_vae() -> AutoencoderKLWan:
    """A small Wan VAE: 8x spatial, 4x temporal compression (as Wan's), 16 latent channels.

    Returns:
        Randomly initialised ``AutoencoderKLWan`` (0.22M parameters).
    """
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + MSE, with pixels away from the background weighted 5x (the shape is small).

    Args:
        recon: decoded clips ``(B, 3, F, H, W)`` in [-1, 1].
        target: the clips.

    Returns:
        Scalar loss.
    """
    background = target.flatten(2).median(dim=2).values[:, :, None, None, None]
    weight = 1.0 + 4.0 * ((target - background).abs().amax(dim=1, keepdim=True) > 0.1).float()
    err = recon - target
    return (weight * (err.abs() + err.pow(2))).mean()


def image_batch(rng: np.random.Generator, batch: int) -> np.ndarray:
    """Single frames, one random frame of each of ``batch`` random clips at a ``VAE_SIZES`` size.

    Args:
        rng: random generator.
        batch: number of frames.

    Returns:
        uint8 ``(batch, 1, H, W, 3)``.
    """
    clips, _texts = clip_batch(rng, batch, pick_size(rng, VAE_SIZES))
    return clips[np.arange(batch), rng.integers(clips.shape[1], size=batch)][:, None]


def fit(
    vae: AutoencoderKLWan,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    desc: str,
    image_share: tuple[float, float],
    sample_share: float,
) -> float:
    """Train a VAE in place on random clips (sizes drawn from ``VAE_SIZES``) and single frames.

    A single frame is the VAE's first chunk alone: eight times as many frames per step
    teach the spatial code (shape, colour) much faster than clips, so training starts
    image-heavy; clip steps keep the causal cache between chunks trained. Decoding
    posterior samples first regularises the code; decoding the mode later (what inference
    uses) sharpens edges.

    Args:
        vae: the model.
        steps: optimiser steps.
        batch: clips per step.
        lr: peak learning rate (cosine decay to 5% after a 50-step warm-up).
        seed: seed of the clips (posterior samples follow torch's global generator).
        desc: progress-bar label.
        image_share: share of steps on ``8 * batch`` single frames instead of clips, at the
            first and the last step (linear in between).
        sample_share: share of steps (the first ones) that decode a posterior sample.

    Returns:
        The smoothed final loss.
    """
    rng = np.random.default_rng(seed)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    )
    ema_loss = None
    governor = ThreadGovernor()
    bar = tqdm(range(steps), desc=desc)
    for step in bar:
        governor()
        share = image_share[0] + (image_share[1] - image_share[0]) * step / max(1, steps - 1)
        sample = step < sample_share * steps
        if rng.random() < share:
            x = to_model_range(image_batch(rng, 8 * batch))
        else:
            x = to_model_range(clip_batch(rng, batch, pick_size(rng, VAE_SIZES))[0])
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample() if sample else posterior.mode()).sample
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
        loss = reconstruction_loss(recon, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        ema_loss = loss.item() if ema_loss is None else 0.95 * ema_loss + 0.05 * loss.item()
        bar.set_postfix(loss=f"{ema_loss:.4f}")
    vae.eval()
    return float(ema_loss)


def train_vae(
    out: Path,
    steps: int,
    batch: int = 4,
    lr: float = 3e-3,
    seed: int = 0,
    image_share: tuple[float, float] = (0.7, 0.3),
    sample_share: float = 0.5,
) -> dict:
    """Train the VAE from scratch, store latent statistics in its config, save it.

    Args:
        out: folder for ``save_pretrained``.
        steps: optimiser steps.
        batch: clips per step.
        lr: peak learning rate.
        seed: seed of weights and data.
        image_share: share of steps on single frames, first and last (see :func:`fit`).
        sample_share: share of steps decoding posterior samples (see :func:`fit`).

    Returns:
        Summary: parameters, steps, final loss, reconstruction check, wall seconds.
    """
    start = time.time()
    torch.manual_seed(seed)
    vae = build_vae()  # training goes on with the generator after initialisation
    final_loss = fit(vae, steps, batch, lr, seed, f"vae (seed {seed})", image_share, sample_share)
    rng = np.random.default_rng(seed + 100)
    mean, std = latent_statistics(vae, rng)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    vae.save_pretrained(str(out), safe_serialization=True)
    return {
        "params": sum(p.numel() for p in vae.parameters()),
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "image_share": list(image_share),
        "sample_share": sample_share,
        "final_loss": final_loss,
        "reconstruction_adherence": reconstruction_check(vae, rng),
        "wall_s": time.time() - start,
    }


@torch.no_grad()
def reconstruction_check(vae: AutoencoderKLWan, rng: np.random.Generator) -> dict[str, float]:
    """Adherence of VAE reconstructions of all 48 captions at 13 x 80 x 48 (an upper bound for generation).

    Args:
        vae: the trained VAE.
        rng: random generator for the clips.

    Returns:
        ``{"color", "shape", "direction"}`` -> share right.
    """
    texts = captions()
    clips, _ = clip_batch(rng, len(texts), (13, 80, 48), texts)
    recon = vae.decode(vae.encode(to_model_range(clips)).latent_dist.mode()).sample
    videos = ((recon.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).numpy()
    checks = [adherence(v, t) for v, t in zip(videos, texts)]
    return {k: float(np.mean([c[f"{k}_ok"] for c in checks])) for k in ("color", "shape", "direction")}


@torch.no_grad()
def latent_statistics(vae: AutoencoderKLWan, rng: np.random.Generator, clips: int = 96) -> tuple[list, list]:
    """Per-channel mean and std of the VAE's posterior mode over main-size clips.

    Args:
        vae: the trained VAE.
        rng: random generator for the clips.
        clips: number of clips encoded (8 per batch).

    Returns:
        ``(latents_mean, latents_std)``, one float per latent channel each.
    """
    latents = []
    for _ in range(clips // 8):
        batch, _texts = clip_batch(rng, 8, MAIN_SIZE)
        latents.append(vae.encode(to_model_range(batch)).latent_dist.mode())
    z = torch.cat(latents).transpose(0, 1).flatten(1)  # (C, N)
    return z.mean(dim=1).tolist(), z.std(dim=1).clamp_min(1e-4).tolist()
