"""The toy world: its pixel adherence metric and the shipped toy model (CPU, no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import harness
from harness.toy.adherence import adherence
from harness.toy.world import COLORS, DIRECTIONS, SHAPES, captions, parse_caption, render_clip

TOY = Path(harness.__file__).parent / "toy" / "weights"


def test_captions_cover_the_world() -> None:
    texts = captions()
    assert len(texts) == len(COLORS) * len(SHAPES) * len(DIRECTIONS) == 48
    assert "a red circle moving left" in texts
    assert all(parse_caption(t) for t in texts)


@pytest.mark.parametrize(
    "text",
    ["", "a red circle", "a pink circle moving left", "a red circle moving sideways", "a red circle moving left x"],
)
def test_parse_caption_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a toy-world caption"):
        parse_caption(text)


def test_render_clip_is_deterministic() -> None:
    a = render_clip("red", "circle", "left", 9, 80, 48, seed=3)
    assert a.shape == (9, 80, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_clip("red", "circle", "left", 9, 80, 48, seed=3))
    assert not np.array_equal(a, render_clip("red", "circle", "left", 9, 80, 48, seed=4))
    with pytest.raises(ValueError, match="pink"):
        render_clip("pink", "circle", "left", 9, 80, 48)


@pytest.mark.parametrize("height,width", [(80, 48), (64, 32)])
def test_the_shape_stays_whole_inside_the_frame(height: int, width: int) -> None:
    # a shape cut by the border would change its outline and fool the shape check
    for shape in SHAPES:
        for direction in DIRECTIONS:
            for seed in range(10):
                clip = render_clip("red", shape, direction, 9, height, width, seed)
                area = (clip != clip[0, 0, 0]).any(axis=-1).sum(axis=(1, 2))
                assert area.max() - area.min() <= 0.1 * area.max(), (shape, direction, seed, area)


@pytest.mark.parametrize("frames,height,width", [(17, 80, 48), (13, 80, 48), (9, 64, 32)])
def test_adherence_is_right_on_drawn_clips(frames: int, height: int, width: int) -> None:
    right, total = 0, 0
    for text in captions():
        for seed in (0, 1):
            result = adherence(render_clip(*parse_caption(text), frames, height, width, seed), text)
            right += bool(result["all_ok"])
            total += 1
    assert right / total >= 0.98


def test_adherence_reads_floats_and_flags_a_wrong_caption() -> None:
    clip = render_clip("blue", "square", "up", 13, 80, 48, seed=0)
    result = adherence(clip.astype(np.float32) / 255, "a green triangle moving down")
    assert (result["color"], result["shape"], result["direction"]) == ("blue", "square", "up")
    assert not (result["color_ok"] or result["shape_ok"] or result["direction_ok"])


def test_shipped_pipeline_generates() -> None:
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(str(TOY / "wan"))
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(
        "a red circle moving left",
        height=80,
        width=48,
        num_frames=9,
        num_inference_steps=3,
        guidance_scale=6.5,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames[0]
    assert frames.shape == (9, 80, 48, 3)
    assert np.isfinite(frames).all()


def test_the_shipped_model_reports_its_own_latent_grid(make_cfg) -> None:
    # read from the pipeline (VAE strides, transformer patch), not assumed from Wan 2.1
    from harness.pipeline.load import load_pipeline

    loaded = load_pipeline(make_cfg(model="toy").model)
    assert (loaded.pipe.vae_scale_factor_spatial, loaded.pipe.vae_scale_factor_temporal) == (8, 4)
    assert loaded.latent_grid(48, 80, 17) == (5, 5 * 3 * 5)


def test_shipped_clip_loads() -> None:
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(TOY / "clip"))
    processor = CLIPProcessor.from_pretrained(str(TOY / "clip"))
    frame = torch.from_numpy(render_clip("red", "circle", "left", 2, 80, 48)[0]).permute(2, 0, 1)
    inputs = processor(text=["a red circle moving left"], images=[frame], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits_per_image.shape == (1, 1)


def test_shipped_model_is_small() -> None:
    size = sum(p.stat().st_size for p in TOY.rglob("*") if p.is_file())
    assert size < 20 * 2**20
