"""Stage 3: train the denoiser (``diffusers.WanTransformer3DModel``) by rectified flow.

Diffusers' flow convention, as its flow schedulers expect: with sigma = t,
x_t = (1 - t) x0 + t noise, the target velocity is noise - x0 and the model gets
timestep t * 1000. x0 are VAE latents normalised by the VAE config's
``latents_mean`` / ``latents_std``; text embeddings are made by ``WanPipeline.encode_prompt``
itself (padded with zeros to 512 tokens, as ``WanPipeline.__call__`` does), and 12% of
captions are dropped to "" (the pipeline's default negative prompt) so that
classifier-free guidance works.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from tqdm import tqdm
from transformers import AutoTokenizer, UMT5EncoderModel

from experiments.toy_world.data import TRANSFORMER_SIZES, ThreadGovernor, clip_batch, pick_size, to_model_range
from harness.toy.world import captions

MAX_SEQUENCE_LENGTH = 512  # what WanPipeline.__call__ pads prompts to
CAPTION_DROPOUT = 0.12
# clips encoded per caption, for each training size
DATASET_SEEDS: dict[tuple[int, int, int], int] = {
    (17, 80, 48): 24,
    (13, 80, 48): 20,
    (9, 80, 48): 6,
    (9, 64, 32): 10,
}


def build_transformer(text_dim: int = 32) -> WanTransformer3DModel:
    """A 6-layer Wan transformer, 4 heads of 32, patch (1, 2, 2).

    Args:
        text_dim: width of the text encoder's output.

    Returns:
        Randomly initialised ``WanTransformer3DModel`` (about 1.6M parameters).
    """
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=4,
        attention_head_dim=32,
        in_channels=16,
        out_channels=16,
        text_dim=text_dim,
        freq_dim=256,
        ffn_dim=384,
        num_layers=6,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def load_pipeline(work: Path, transformer: WanTransformer3DModel) -> WanPipeline:
    """Assemble a ``WanPipeline`` from the saved stages and a transformer.

    Args:
        work: training folder with ``vae/``, ``tokenizer/`` and ``text_encoder/``.
        transformer: the denoiser.

    Returns:
        The pipeline, with the T2V scheduler (UniPC, flow prediction, shift 3).
    """
    return WanPipeline(
        tokenizer=AutoTokenizer.from_pretrained(str(work / "tokenizer")),
        text_encoder=UMT5EncoderModel.from_pretrained(str(work / "text_encoder")).eval(),
        vae=AutoencoderKLWan.from_pretrained(str(work / "vae")).eval(),
        transformer=transformer,
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
    )


@torch.no_grad()
def text_embeddings(pipe: WanPipeline, texts: list[str]) -> torch.Tensor:
    """Prompt embeddings exactly as ``WanPipeline.__call__`` makes them.

    Args:
        pipe: the pipeline.
        texts: prompts.

    Returns:
        ``(len(texts), 512, d_model)``.
    """
    embeds, _ = pipe.encode_prompt(texts, do_classifier_free_guidance=False, max_sequence_length=MAX_SEQUENCE_LENGTH)
    return embeds.float()


@torch.no_grad()
def encode_dataset(
    vae: AutoencoderKLWan, seeds: dict[tuple[int, int, int], int], seed: int
) -> dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]]:
    """Encode clips of every caption to normalised latents.

    Args:
        vae: VAE with ``latents_mean`` / ``latents_std`` in its config.
        seeds: clips per caption for each ``(frames, height, width)``.
        seed: data seed.

    Returns:
        size -> (latents ``(N, 16, f, h, w)``, caption indices ``(N,)``).
    """
    rng = np.random.default_rng(seed)
    all_captions = captions()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    data = {}
    governor = ThreadGovernor(every=5)
    for size, per_caption in seeds.items():
        index = np.repeat(np.arange(len(all_captions)), per_caption)
        latents = []
        for chunk in tqdm(np.array_split(index, max(1, len(index) // 16)), desc=f"encode {size}"):
            governor()
            clips, _ = clip_batch(rng, len(chunk), size, [all_captions[i] for i in chunk])
            z = vae.encode(to_model_range(clips)).latent_dist.mode()
            latents.append((z - mean) / std)
        data[size] = (torch.cat(latents), torch.from_numpy(index))
    return data


def sample_t(batch: int, generator: torch.Generator) -> torch.Tensor:
    """Flow times: 70% logit-normal(0, 1), 30% uniform, clipped to [0.001, 0.999].

    Args:
        batch: how many.
        generator: torch generator.

    Returns:
        ``(batch,)`` floats.
    """
    logit_normal = torch.sigmoid(torch.randn(batch, generator=generator))
    uniform = torch.rand(batch, generator=generator)
    pick = torch.rand(batch, generator=generator) < 0.7
    return torch.where(pick, logit_normal, uniform).clamp(0.001, 0.999)


def train_transformer(
    work: Path,
    steps: int,
    batch: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    ema_decay: float = 0.998,
    start_from: str | None = None,
    save_as: str = "transformer",
) -> dict:
    """Encode the dataset, train the transformer, save its EMA weights to ``work/<save_as>``.

    Args:
        work: training folder with the VAE and text stages.
        steps: optimiser steps.
        batch: latents per step.
        lr: peak learning rate (cosine to 10% after a 200-step warm-up).
        seed: seed of weights, data and noise.
        ema_decay: decay of the weight average that is saved.
        start_from: folder in ``work`` of a saved transformer to continue (a later phase), or
            None for a new one. A phase saves to its own folder, so rerunning an earlier
            phase never leaves a later phase's record describing other weights.
        save_as: folder in ``work`` for the EMA weights.

    Returns:
        Summary: parameters, steps, dataset size, final loss, wall seconds.
    """
    start = time.time()
    torch.manual_seed(seed)
    if start_from:
        model = WanTransformer3DModel.from_pretrained(str(work / start_from)).train()
    else:
        model = build_transformer().train()
    pipe = load_pipeline(work, model)
    all_captions = captions()
    embeds = text_embeddings(pipe, all_captions + [""])  # last row: the empty prompt
    data = encode_dataset(pipe.vae, DATASET_SEEDS, seed + 1)
    encode_s = time.time() - start

    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    )
    rng = np.random.default_rng(seed + 2)
    gen = torch.Generator().manual_seed(seed + 3)
    ema_loss = None
    governor = ThreadGovernor()
    bar = tqdm(range(steps), desc=save_as)
    for step in bar:
        governor()
        latents, index = data[pick_size(rng, TRANSFORMER_SIZES)]
        rows = torch.from_numpy(rng.integers(len(latents), size=batch))
        x0 = latents[rows]
        cap = index[rows].clone()
        cap[torch.from_numpy(rng.random(batch) < CAPTION_DROPOUT)] = len(all_captions)
        t = sample_t(batch, gen)
        noise = torch.randn(x0.shape, generator=gen)
        tt = t.view(-1, 1, 1, 1, 1)
        pred = model(
            hidden_states=(1 - tt) * x0 + tt * noise,
            timestep=t * 1000,
            encoder_hidden_states=embeds[cap],
            return_dict=False,
        )[0]
        loss = torch.nn.functional.mse_loss(pred, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - decay)
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema_loss:.4f}")
    ema.save_pretrained(str(work / save_as), safe_serialization=True)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "start_from": start_from,
        "dataset_clips": {f"{f}x{h}x{w}": len(data[(f, h, w)][0]) for f, h, w in data},
        "encode_s": encode_s,
        "final_loss": ema_loss,
        "wall_s": time.time() - start,
    }
