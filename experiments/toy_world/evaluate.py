"""Measure the shipped toy model with plain ``WanPipeline`` calls; write ``results.json`` and a grid.

a. adherence (``harness.toy.world.adherence``) over all 48 captions x 2 seeds with the
   "balanced" preset mapped to the toy size (euler, 18 steps, shift 3, guidance 6.5,
   48 wide x 80 high, 13 frames), and the same without guidance; the other presets too;
b. CLIP score (torchmetrics ``CLIPScore`` on the shipped CLIP) of those videos, own caption
   against a wrong-colour and a wrong-shape caption;
c. fidelity (PSNR, SSIM) to a 50-step reference of the same solver and shift, over
   4-25 steps for unipc, dpm++ and euler, with the Spearman rho of fidelity vs steps.

    python -m experiments.toy_world.evaluate
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanPipeline,
)
from PIL import Image, ImageDraw
from scipy.stats import spearmanr
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.multimodal import CLIPScore
from transformers import CLIPModel, CLIPProcessor

from harness.toy.adherence import adherence
from harness.toy.world import COLORS, SHAPES, captions, make_caption, parse_caption

HERE = Path(__file__).parent
# worker presets mapped to the toy size: (solver, steps, guidance, shift, height, width, frames)
PRESETS: dict[str, tuple[str, int, float, float, int, int, int]] = {  # balanced first: the acceptance setting
    "balanced": ("euler", 18, 6.5, 3.0, 80, 48, 13),
    "current": ("unipc", 25, 6.5, 5.0, 80, 48, 17),
    "aggressive": ("euler", 15, 6.0, 2.5, 64, 32, 9),
    "quality": ("dpm++", 20, 6.5, 4.0, 80, 48, 17),
}
TARGETS = {"color": 0.90, "direction": 0.90, "shape": 0.60, "clip_gap": 15.0, "spearman": 0.90}
FIDELITY_STEPS = [4, 6, 8, 12, 18, 25]
GRID_CAPTIONS = [
    "a red circle moving left",
    "a green square moving up",
    "a blue triangle moving right",
    "a yellow circle moving down",
    "a red triangle moving down",
    "a green circle moving right",
    "a blue square moving left",
    "a yellow triangle moving up",
]
FIDELITY_CAPTIONS = [
    "a red circle moving left",
    "a green square moving up",
    "a blue triangle moving right",
    "a yellow circle moving down",
]


def make_scheduler(solver: str, shift: float):
    """The diffusers scheduler of a worker solver name.

    Args:
        solver: ``unipc``, ``dpm++`` or ``euler``.
        shift: flow shift.

    Returns:
        A scheduler instance.

    Raises:
        ValueError: on an unknown solver.
    """
    if solver == "unipc":
        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    if solver == "dpm++":
        return DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    if solver == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=shift)
    raise ValueError(f"unknown solver {solver!r}: use unipc, dpm++ or euler")


def generate(
    pipe: WanPipeline, prompts: list[str], seeds: list[int], solver: str, steps: int,
    guidance: float, shift: float, height: int, width: int, frames: int,
) -> np.ndarray:
    """Generate one video per prompt, each from its own seeded generator.

    Args:
        pipe: the pipeline.
        prompts: captions.
        seeds: one seed per prompt.
        solver: ``unipc``, ``dpm++`` or ``euler``.
        steps: inference steps.
        guidance: classifier-free guidance scale.
        shift: flow shift.
        height: frame height.
        width: frame width.
        frames: number of frames (4n+1).

    Returns:
        float array ``(len(prompts), frames, height, width, 3)`` in [0, 1].
    """
    pipe.scheduler = make_scheduler(solver, shift)
    with torch.no_grad():
        return pipe(
            prompts, height=height, width=width, num_frames=frames, num_inference_steps=steps,
            guidance_scale=guidance, generator=[torch.Generator().manual_seed(s) for s in seeds],
            output_type="np",
        ).frames


def adherence_rates(videos: np.ndarray, prompts: list[str]) -> dict[str, float]:
    """Share of videos whose colour, shape, direction (and all three) match the prompt.

    Args:
        videos: ``(N, F, H, W, 3)`` in [0, 1].
        prompts: their captions.

    Returns:
        ``{"color", "shape", "direction", "all"}`` -> rate in [0, 1].
    """
    checks = [adherence(v, p) for v, p in zip(videos, prompts)]
    return {k: float(np.mean([c[f"{k}_ok"] for c in checks])) for k in ("color", "shape", "direction", "all")}


class _TensorFeatures(torch.nn.Module):
    """A ``CLIPModel`` whose feature methods return tensors (transformers 5 returns outputs)."""

    def __init__(self, model: CLIPModel) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        out = self.model.get_image_features(*args, **kwargs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        out = self.model.get_text_features(*args, **kwargs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


def clip_metric(clip_dir: Path) -> CLIPScore:
    """torchmetrics ``CLIPScore`` on the shipped CLIP.

    Args:
        clip_dir: folder with ``CLIPModel`` and ``CLIPProcessor``.

    Returns:
        The metric.
    """
    model = _TensorFeatures(CLIPModel.from_pretrained(str(clip_dir)).eval())
    processor = CLIPProcessor.from_pretrained(str(clip_dir))
    return CLIPScore(model_name_or_path=lambda: (model, processor))


def video_clip_score(metric: CLIPScore, video: np.ndarray, text: str) -> float:
    """Mean over frames of the CLIP score of a video against a text.

    Args:
        metric: a ``CLIPScore``.
        video: ``(F, H, W, 3)`` in [0, 1].
        text: caption.

    Returns:
        Score in [0, 100].
    """
    frames = torch.from_numpy((video * 255).round().astype(np.uint8)).permute(0, 3, 1, 2)
    metric.reset()
    metric.update(list(frames), [text] * len(frames))
    return float(metric.compute())


def wrong_captions(text: str) -> tuple[str, str]:
    """The caption with the next colour, and with the next shape.

    Args:
        text: a world caption.

    Returns:
        ``(wrong_colour_caption, wrong_shape_caption)``.
    """
    color, shape, direction = parse_caption(text)
    names = list(COLORS)
    other_color = names[(names.index(color) + 1) % len(names)]
    other_shape = SHAPES[(SHAPES.index(shape) + 1) % len(SHAPES)]
    return make_caption(other_color, shape, direction), make_caption(color, other_shape, direction)


def fidelity(video: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """PSNR and SSIM of a video against a reference, frames as float in [0, 1].

    Args:
        video: ``(F, H, W, 3)``.
        reference: same shape.

    Returns:
        ``(psnr, ssim)``.
    """
    a = torch.from_numpy(video).permute(0, 3, 1, 2).float()
    b = torch.from_numpy(reference).permute(0, 3, 1, 2).float()
    return (
        float(peak_signal_noise_ratio(a, b, data_range=1.0)),
        float(structural_similarity_index_measure(a, b, data_range=1.0)),
    )


def save_grid(videos: np.ndarray, prompts: list[str], path: Path, scale: int = 2) -> None:
    """A PNG with one row per video (caption at the left) and one column per frame.

    Args:
        videos: ``(N, F, H, W, 3)`` in [0, 1].
        prompts: captions of the rows.
        path: output file.
        scale: nearest-neighbour upscaling of frames.
    """
    n, f, h, w, _ = videos.shape
    label_w, pad = 170, 2
    grid = Image.new("RGB", (label_w + f * (w * scale + pad), n * (h * scale + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for row, (video, text) in enumerate(zip(videos, prompts)):
        y = row * (h * scale + pad)
        draw.text((4, y + h * scale // 2 - 6), text, fill=(0, 0, 0))
        for col, frame in enumerate(video):
            tile = Image.fromarray((frame * 255).round().astype(np.uint8)).resize((w * scale, h * scale), Image.NEAREST)
            grid.paste(tile, (label_w + col * (w * scale + pad), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def main() -> None:
    """Run the three measurements and write results and grids."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("harness/toy/weights"))
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    parser.add_argument("--quick", action="store_true", help="8 captions, fewer steps: test the code")
    args = parser.parse_args()
    start = time.time()
    pipe = WanPipeline.from_pretrained(str(args.model / "wan"))
    pipe.set_progress_bar_config(disable=True)
    prompts = captions()[:: 6 if args.quick else 1]
    seeds = [0, 1]
    all_prompts = [p for p in prompts for _ in seeds]
    all_seeds = [s for _ in prompts for s in seeds]
    results: dict = {"targets": TARGETS, "videos_per_setting": len(all_prompts)}

    # a. adherence
    videos: dict[str, np.ndarray] = {}
    results["adherence"] = {}
    for name, (solver, steps, guidance, shift, height, width, frames) in PRESETS.items():
        videos[name] = generate(pipe, all_prompts, all_seeds, solver, steps, guidance, shift, height, width, frames)
        results["adherence"][name] = {
            "solver": solver, "steps": steps, "guidance": guidance, "shift": shift,
            "width": width, "height": height, "frames": frames,
            **adherence_rates(videos[name], all_prompts),
        }
        print(f"[evaluate] adherence {name}: {results['adherence'][name]}", flush=True)
    solver, steps, _, shift, height, width, frames = PRESETS["balanced"]
    unguided = generate(pipe, all_prompts, all_seeds, solver, steps, 1.0, shift, height, width, frames)
    results["adherence"]["balanced_no_guidance"] = {"guidance": 1.0, **adherence_rates(unguided, all_prompts)}
    print(f"[evaluate] adherence balanced, guidance 1: {results['adherence']['balanced_no_guidance']}", flush=True)

    # b. CLIP score
    metric = clip_metric(args.model / "clip")
    own, bad_color, bad_shape = [], [], []
    for video, text in zip(videos["balanced"], all_prompts):
        wrong_color, wrong_shape = wrong_captions(text)
        own.append(video_clip_score(metric, video, text))
        bad_color.append(video_clip_score(metric, video, wrong_color))
        bad_shape.append(video_clip_score(metric, video, wrong_shape))
    results["clip_score"] = {
        "own": float(np.mean(own)), "wrong_color": float(np.mean(bad_color)), "wrong_shape": float(np.mean(bad_shape)),
        "gap_color": float(np.mean(own) - np.mean(bad_color)), "gap_shape": float(np.mean(own) - np.mean(bad_shape)),
    }
    print(f"[evaluate] clip score: {results['clip_score']}", flush=True)

    # c. fidelity vs steps
    fid_prompts = FIDELITY_CAPTIONS[:2] if args.quick else FIDELITY_CAPTIONS
    fid_seeds = list(range(len(fid_prompts)))
    step_list = [4, 8, 18] if args.quick else FIDELITY_STEPS
    results["fidelity"] = {}
    for solver in ("unipc", "dpm++", "euler"):
        reference = generate(pipe, fid_prompts, fid_seeds, solver, 50, 6.5, 3.0, 80, 48, 17)
        psnr, ssim = [], []
        for n in step_list:
            out = generate(pipe, fid_prompts, fid_seeds, solver, n, 6.5, 3.0, 80, 48, 17)
            scores = [fidelity(v, r) for v, r in zip(out, reference)]
            psnr.append(float(np.mean([s[0] for s in scores])))
            ssim.append(float(np.mean([s[1] for s in scores])))
        results["fidelity"][solver] = {
            "steps": step_list, "psnr": psnr, "ssim": ssim,
            "spearman_psnr": float(spearmanr(step_list, psnr).statistic),
            "spearman_ssim": float(spearmanr(step_list, ssim).statistic),
        }
        print(f"[evaluate] fidelity {solver}: {results['fidelity'][solver]}", flush=True)

    a, c = results["adherence"]["balanced"], results["clip_score"]
    results["met"] = {
        "color": a["color"] >= TARGETS["color"],
        "direction": a["direction"] >= TARGETS["direction"],
        "shape": a["shape"] >= TARGETS["shape"],
        "clip_gap_color": c["gap_color"] >= TARGETS["clip_gap"],
        "clip_gap_shape": c["gap_shape"] >= TARGETS["clip_gap"],
        **{f"spearman_{s}": v["spearman_psnr"] >= TARGETS["spearman"] for s, v in results["fidelity"].items()},
    }
    results["wall_s"] = round(time.time() - start, 1)
    args.results.write_text(json.dumps(results, indent=2))
    solver, steps, guidance, shift, height, width, frames = PRESETS["balanced"]
    seeds0 = [0] * len(GRID_CAPTIONS)
    grid = generate(pipe, GRID_CAPTIONS, seeds0, solver, steps, guidance, shift, height, width, frames)
    save_grid(grid, GRID_CAPTIONS, args.results.parent / "grid.png")
    grid = generate(pipe, GRID_CAPTIONS, seeds0, "unipc", 25, 6.5, 3.0, 80, 48, 17)
    save_grid(grid, GRID_CAPTIONS, args.model / "grid.png")
    print(f"[evaluate] met: {results['met']}; {results['wall_s']:.0f} s; wrote {args.results}", flush=True)


if __name__ == "__main__":
    main()
