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
from diffusers import WanPipeline
from omegaconf import OmegaConf
from PIL import Image, ImageDraw
from scipy.stats import spearmanr

from harness import CONF_DIR
from harness.measure.quality import ClipScorer, fidelity
from harness.pipeline.schedulers import build_scheduler
from harness.toy.adherence import adherence
from harness.toy.world import COLORS, SHAPES, captions, make_caption, parse_caption

HERE = Path(__file__).parent
SOLVERS = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "solver" / "flow_matching.yaml"))
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


def generate(
    pipe: WanPipeline,
    prompts: list[str],
    seeds: list[int],
    solver: str,
    steps: int,
    guidance: float,
    shift: float,
    height: int,
    width: int,
    frames: int,
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
    pipe.scheduler = build_scheduler(solver, shift, SOLVERS)
    with torch.no_grad():
        return pipe(
            prompts,
            height=height,
            width=width,
            num_frames=frames,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=[torch.Generator().manual_seed(s) for s in seeds],
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


def to_uint8(video: np.ndarray) -> np.ndarray:
    """A pipeline's float frames in [0, 1] as uint8, the form the harness scores."""
    return (video * 255).round().astype(np.uint8)


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


def measure_adherence(pipe: WanPipeline, prompts: list[str], seeds: list[int]) -> tuple[dict, dict[str, np.ndarray]]:
    """a. Adherence rates of every preset (and of balanced without guidance), and the videos."""
    videos: dict[str, np.ndarray] = {}
    rates: dict[str, dict] = {}
    for name, (solver, steps, guidance, shift, height, width, frames) in PRESETS.items():
        videos[name] = generate(pipe, prompts, seeds, solver, steps, guidance, shift, height, width, frames)
        rates[name] = {
            "solver": solver,
            "steps": steps,
            "guidance": guidance,
            "shift": shift,
            "width": width,
            "height": height,
            "frames": frames,
            **adherence_rates(videos[name], prompts),
        }
        print(f"[evaluate] adherence {name}: {rates[name]}", flush=True)
    solver, steps, _, shift, height, width, frames = PRESETS["balanced"]
    unguided = generate(pipe, prompts, seeds, solver, steps, 1.0, shift, height, width, frames)
    rates["balanced_no_guidance"] = {"guidance": 1.0, **adherence_rates(unguided, prompts)}
    print(f"[evaluate] adherence balanced, guidance 1: {rates['balanced_no_guidance']}", flush=True)
    return rates, videos


def measure_clip(clip_dir: Path, videos: np.ndarray, prompts: list[str]) -> dict[str, float]:
    """b. CLIP score of videos against their own caption, a wrong-colour and a wrong-shape caption."""
    scorer = ClipScorer({"name": "toy", "clip": str(clip_dir)})
    own, bad_color, bad_shape = [], [], []
    for video, text in zip(videos, prompts):
        wrong_color, wrong_shape = wrong_captions(text)
        frames = to_uint8(video)
        own.append(scorer.score(frames, text))
        bad_color.append(scorer.score(frames, wrong_color))
        bad_shape.append(scorer.score(frames, wrong_shape))
    scores = {
        "own": float(np.mean(own)),
        "wrong_color": float(np.mean(bad_color)),
        "wrong_shape": float(np.mean(bad_shape)),
        "gap_color": float(np.mean(own) - np.mean(bad_color)),
        "gap_shape": float(np.mean(own) - np.mean(bad_shape)),
    }
    print(f"[evaluate] clip score: {scores}", flush=True)
    return scores


def measure_fidelity(pipe: WanPipeline, quick: bool) -> dict[str, dict]:
    """c. Fidelity to a 50-step reference of the same solver and shift, against steps, per solver."""
    prompts = FIDELITY_CAPTIONS[:2] if quick else FIDELITY_CAPTIONS
    seeds = list(range(len(prompts)))
    step_list = [4, 8, 18] if quick else FIDELITY_STEPS
    results = {}
    for solver in ("unipc", "dpm++", "euler"):
        reference = generate(pipe, prompts, seeds, solver, 50, 6.5, 3.0, 80, 48, 17)
        psnr, ssim = [], []
        for n in step_list:
            out = generate(pipe, prompts, seeds, solver, n, 6.5, 3.0, 80, 48, 17)
            scores = [fidelity(to_uint8(v), to_uint8(r)) for v, r in zip(out, reference)]
            psnr.append(float(np.mean([s["psnr_db"] for s in scores])))
            ssim.append(float(np.mean([s["ssim"] for s in scores])))
        results[solver] = {
            "steps": step_list,
            "psnr": psnr,
            "ssim": ssim,
            "spearman_psnr": float(spearmanr(step_list, psnr).statistic),
            "spearman_ssim": float(spearmanr(step_list, ssim).statistic),
        }
        print(f"[evaluate] fidelity {solver}: {results[solver]}", flush=True)
    return results


def targets_met(results: dict) -> dict[str, bool]:
    """Which of the world's targets the measurements meet."""
    a, c = results["adherence"]["balanced"], results["clip_score"]
    return {
        "color": a["color"] >= TARGETS["color"],
        "direction": a["direction"] >= TARGETS["direction"],
        "shape": a["shape"] >= TARGETS["shape"],
        "clip_gap_color": c["gap_color"] >= TARGETS["clip_gap"],
        "clip_gap_shape": c["gap_shape"] >= TARGETS["clip_gap"],
        **{f"spearman_{s}": v["spearman_psnr"] >= TARGETS["spearman"] for s, v in results["fidelity"].items()},
    }


def write_grids(pipe: WanPipeline, results_dir: Path, model_dir: Path) -> None:
    """Frame grids of the grid captions: balanced preset beside the results, baseline in the model card."""
    solver, steps, guidance, shift, height, width, frames = PRESETS["balanced"]
    seeds0 = [0] * len(GRID_CAPTIONS)
    grid = generate(pipe, GRID_CAPTIONS, seeds0, solver, steps, guidance, shift, height, width, frames)
    save_grid(grid, GRID_CAPTIONS, results_dir / "grid.png")
    grid = generate(pipe, GRID_CAPTIONS, seeds0, "unipc", 25, 6.5, 3.0, 80, 48, 17)
    save_grid(grid, GRID_CAPTIONS, model_dir / "grid.png")


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
    results["adherence"], videos = measure_adherence(pipe, all_prompts, all_seeds)
    results["clip_score"] = measure_clip(args.model / "clip", videos["balanced"], all_prompts)
    results["fidelity"] = measure_fidelity(pipe, args.quick)
    results["met"] = targets_met(results)
    results["wall_s"] = round(time.time() - start, 1)
    args.results.write_text(json.dumps(results, indent=2))
    write_grids(pipe, args.results.parent, args.model)
    print(f"[evaluate] met: {results['met']}; {results['wall_s']:.0f} s; wrote {args.results}", flush=True)


if __name__ == "__main__":
    main()
