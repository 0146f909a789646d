"""Small models of the real classes, built locally with a fixed seed.

Nothing can be downloaded from a model hub on CPU machines and in CI, so the harness
builds tiny stand-ins of the same classes (``WanPipeline`` of ``AutoencoderKLWan``,
``WanTransformer3DModel``, ``UMT5EncoderModel``; ``CLIPModel`` with ``CLIPProcessor``),
saves them with ``save_pretrained`` and loads them back with ``from_pretrained``: the
same loading path as the real weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Words every small text tokenizer knows; anything else maps to <unk>.
WORDS = (
    "a an the of and with in on at to is moving left right up down red green blue yellow "
    "white black orange purple circle square triangle cat dog person car tree sky water "
    "walking running flying over under slowly quickly"
).split()

CLIP_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,'-!?")


def build_word_tokenizer(words: list[str] | tuple[str, ...] = WORDS):
    """A word-level tokenizer in the T5 style: ``</s>`` closes every text, ``<pad>`` is id 0.

    The empty string (the pipeline's default negative prompt) becomes ``[</s>]``, so it
    is never an empty sequence.

    Args:
        words: vocabulary, lower case.

    Returns:
        A ``transformers`` fast tokenizer that ``WanPipeline.save_pretrained`` can store.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


# The small models' text encoder: a 2-layer UMT5 (d_model 32); the vocabulary is the tokenizer's.
SMALL_TEXT_ENCODER = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8)


def build_small_text_encoder(vocab_size: int):
    """A random 2-layer ``UMT5EncoderModel`` (d_model 32), the small models' text encoder.

    Args:
        vocab_size: the tokenizer's vocabulary size.

    Returns:
        The encoder (seed torch first for reproducible weights).
    """
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(**{**SMALL_TEXT_ENCODER, "vocab_size": vocab_size}))


def build_char_clip_tokenizer(folder: Path):
    """A real ``CLIPTokenizer`` over single characters (a BPE with no merges).

    Args:
        folder: where ``vocab.json`` and ``merges.txt`` are written.

    Returns:
        The tokenizer and its vocabulary size.
    """
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for char in CLIP_CHARS:
        vocab[char] = len(vocab)
    for char in CLIP_CHARS:
        vocab[char + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    return tokenizer, len(vocab)


# The tiny model's components, as in diffusers' own Wan tests: the whole pipeline runs on a CPU in well under a second.
TINY_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
TINY_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=16,
    out_channels=16,
    text_dim=32,
    freq_dim=256,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
)


def build_tiny_wan(folder: Path, seed: int = 0) -> Path:
    """Build a random tiny ``WanPipeline`` (2-layer transformer) and save it.

    Args:
        folder: destination, written in the ``save_pretrained`` layout.
        seed: seed of the random weights, so every machine builds the same model.

    Returns:
        ``folder``.
    """
    text_encoder = {**SMALL_TEXT_ENCODER, "vocab_size": len(build_word_tokenizer())}
    architecture = {"transformer": TINY_TRANSFORMER, "vae": TINY_VAE, "text_encoder": text_encoder}
    return build_random_wan(folder, seed=seed, architecture=architecture)


def build_tiny_clip(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    """Build a random tiny ``CLIPModel`` with its ``CLIPProcessor`` and save both.

    Args:
        folder: destination (``from_pretrained`` layout for model and processor).
        seed: seed of the random weights.
        image_size: side of the square input the vision tower sees.

    Returns:
        ``folder``.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    tokenizer, vocab_size = build_char_clip_tokenizer(folder)
    end_id = vocab_size - 1
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    text = {
        "vocab_size": vocab_size,
        "max_position_embeddings": 77,
        "bos_token_id": end_id - 1,
        "eos_token_id": end_id,
        "pad_token_id": end_id,
    }
    config = CLIPConfig(
        text_config={**tower, **text},
        vision_config={**tower, "image_size": image_size, "patch_size": 8},
        projection_dim=32,
    )
    model = CLIPModel(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def build_random_wan(folder: Path, seed: int = 0, architecture: dict | None = None) -> Path:
    """Build a ``WanPipeline`` of a given architecture with random weights, and save it.

    With the published 1.3B architecture (``conf/model/wan2.1-t2v-1.3b-random.yaml``)
    this times like the real model without its weights. The tokenizer is the small word
    tokenizer: its ids are valid for any vocabulary at least as large.

    Args:
        folder: destination (``save_pretrained`` layout).
        seed: seed of the random weights.
        architecture: ``transformer``, ``vae`` and ``text_encoder`` constructor arguments.

    Returns:
        ``folder``.

    Raises:
        ValueError: an architecture section is missing.
    """
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    architecture = dict(architecture or {})
    missing = [part for part in ("transformer", "vae", "text_encoder") if part not in architecture]
    if missing:
        raise ValueError(f"model.architecture lacks {missing}; it needs transformer, vae and text_encoder")
    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer()
    if architecture["text_encoder"]["vocab_size"] < len(tokenizer):
        raise ValueError(f"model.architecture.text_encoder.vocab_size must be >= {len(tokenizer)}")
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=UMT5EncoderModel(UMT5Config(**architecture["text_encoder"])),
        vae=AutoencoderKLWan(**architecture["vae"]),
        transformer=WanTransformer3DModel(
            **{**architecture["transformer"], "patch_size": tuple(architecture["transformer"]["patch_size"])}
        ),
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
    )
    pipe.save_pretrained(str(folder))
    return folder


def random_components(architecture: dict, device: torch.device, text_dtype: torch.dtype, vae_dtype: torch.dtype,
                      seed: int = 0) -> dict:  # fmt: skip
    """A ``WanPipeline``'s tokenizer, text encoder and VAE of an architecture, random, made on ``device`` itself.

    Nothing touches the disk (the 5.7 B-parameter umT5-XXL encoder alone is 23 GB of float32): each module is
    built and initialised on the device by its own constructor, then cast.

    Args:
        architecture: ``transformer``, ``vae`` and ``text_encoder`` constructor arguments.
        device: where the weights are made.
        text_dtype: the text encoder's dtype.
        vae_dtype: the VAE's dtype.
        seed: seed of the random weights.

    Returns:
        ``tokenizer``, ``text_encoder``, ``vae`` and ``scheduler`` for ``WanPipeline(...)``.
    """
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    with torch.device(device):
        text_encoder = UMT5EncoderModel(UMT5Config(**architecture["text_encoder"])).to(text_dtype).eval()
        vae = AutoencoderKLWan(**architecture["vae"]).to(vae_dtype).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return {"tokenizer": build_word_tokenizer(), "text_encoder": text_encoder, "vae": vae, "scheduler": scheduler}


def random_transformer(architecture: dict, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """The architecture's ``WanTransformer3DModel``, random, made on ``device`` (the same seed, the same weights)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed + 1)
    spec = {**architecture["transformer"], "patch_size": tuple(architecture["transformer"]["patch_size"])}
    with torch.device(device):
        return WanTransformer3DModel(**spec).to(dtype).eval()
