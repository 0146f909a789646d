"""Stage 4: train a small CLIP (transformers ``CLIPModel`` + ``CLIPProcessor``) on toy-world frames.

A single frame shows colour and shape but not motion, so an image is matched against all
48 captions with every caption of its colour and shape counted as right (a soft
contrastive loss): wrong-colour and wrong-shape captions of the same clip are the hard
negatives. Frames are blurred at random, as generated frames are softer than drawn ones.
The processor squashes the whole frame to 32 x 32 (no centre crop, which would cut the
top and bottom of portrait frames, where a shape moving up or down is).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm import tqdm
from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

from experiments.toy_world.data import ThreadGovernor, clip_batch
from harness.pipeline.builders import build_tiny_clip
from harness.toy.world import captions

IMAGE_SIZE = 32


def pooled(output: torch.Tensor | object) -> torch.Tensor:
    """The feature tensor from ``get_image_features`` / ``get_text_features``.

    transformers 5 returns a model-output object there; older versions a tensor.

    Args:
        output: what the call returned.

    Returns:
        ``(N, projection_dim)`` tensor.
    """
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def frame_pool(processor: CLIPProcessor, rng: np.random.Generator, seeds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Processed frames of every caption at the main and the small training size.

    Args:
        processor: the CLIP processor (does resize and normalisation).
        rng: random generator.
        seeds: clips per caption and size; 3 frames of each are kept.

    Returns:
        ``pixel_values (N, 3, 32, 32)`` and the class ``colour * 3 + shape`` of each ``(N,)``.
    """
    all_captions = captions()
    texts = [c for c in all_captions for _ in range(seeds)]
    images, labels = [], []
    for size in ((17, 80, 48), (9, 64, 32)):
        clips, _ = clip_batch(rng, len(texts), size, texts)
        for clip, text in zip(clips, texts):
            for i in rng.choice(len(clip), size=3, replace=False):
                sigma = rng.choice([0.0, 0.0, 0.7, 1.2, 1.8])
                frame = ndimage.gaussian_filter(clip[i].astype(np.float32), (sigma, sigma, 0))
                images.append(torch.from_numpy(frame.round().astype(np.uint8)).permute(2, 0, 1))
                labels.append(all_captions.index(text) // 4)  # captions are colour, shape, direction
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    return pixels, torch.tensor(labels)


def train_clip(work: Path, steps: int, batch: int = 128, lr: float = 2e-3, seed: int = 0) -> dict:
    """Build the tiny CLIP of ``harness.pipeline.builders``, train it and save model and processor.

    Args:
        work: training folder; the result goes to ``work/clip``.
        steps: optimiser steps.
        batch: frames per step.
        lr: peak learning rate (cosine decay).
        seed: seed of weights and data.

    Returns:
        Summary: parameters, steps, final loss, wall seconds.
    """
    start = time.time()
    out = work / "clip"
    build_tiny_clip(out, seed=seed, image_size=IMAGE_SIZE)
    model = CLIPModel.from_pretrained(str(out)).train()
    processor = CLIPProcessor.from_pretrained(str(out))
    processor.image_processor = CLIPImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False,
    )
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    pixels, labels = frame_pool(processor, rng, seeds=12)
    all_captions = captions()
    text_inputs = processor(text=all_captions, padding=True, return_tensors="pt")
    text_class = torch.tensor([all_captions.index(c) // 4 for c in all_captions])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    ema_loss = None
    governor = ThreadGovernor()
    bar = tqdm(range(steps), desc="clip")
    for _ in bar:
        governor()
        rows = torch.from_numpy(rng.integers(len(pixels), size=batch))
        image = F.normalize(pooled(model.get_image_features(pixel_values=pixels[rows])), dim=-1)
        text = F.normalize(pooled(model.get_text_features(**text_inputs)), dim=-1)
        logits = model.logit_scale.exp() * image @ text.T  # (batch, 48)
        match = (labels[rows][:, None] == text_class[None, :]).float()
        loss_i2t = -(match / match.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
        has = match.sum(0) > 0
        loss_t2i = -((match / match.sum(0, keepdim=True).clamp_min(1)) * logits.log_softmax(0)).sum(0)[has].mean()
        loss = (loss_i2t + loss_t2i) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        ema_loss = loss.item() if ema_loss is None else 0.95 * ema_loss + 0.05 * loss.item()
        bar.set_postfix(loss=f"{ema_loss:.3f}")
    model.eval().save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "batch": batch,
        "frames": len(pixels),
        "final_loss": ema_loss,
        "wall_s": time.time() - start,
    }
