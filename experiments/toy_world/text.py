"""Stage 2: the text encoder, a frozen random small ``UMT5EncoderModel`` with the harness's
word tokenizer (its vocabulary holds every word of the toy world). Nothing is trained:
random word embeddings already tell the captions apart, and the transformer learns to
read them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.pipeline.builders import build_small_text_encoder, build_word_tokenizer


def build_text_encoder(out: Path, seed: int = 0) -> dict:
    """Build tokenizer and encoder with a fixed seed and save them.

    Args:
        out: folder; ``tokenizer/`` and ``text_encoder/`` are written under it.
        seed: seed of the random weights.

    Returns:
        Summary: parameters, d_model.
    """
    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer()
    encoder = build_small_text_encoder(len(tokenizer)).eval()
    tokenizer.save_pretrained(str(out / "tokenizer"))
    encoder.save_pretrained(str(out / "text_encoder"), safe_serialization=True)
    return {"params": sum(p.numel() for p in encoder.parameters()), "d_model": 32}
