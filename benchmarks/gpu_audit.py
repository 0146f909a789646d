"""The real Wan 2.1 T2V-1.3B architecture on a GPU, in one command that stops itself inside its time budget.

Timing does not depend on weight values, so the published architecture with random weights, made on the GPU
itself (``model=wan2.1-t2v-1.3b-random model.materialize=device``: no 23 GB of float32 on disk), times like
the real model. Sections, in order of value, each skipped (and said so) when the budget left cannot hold it:

  a. one transformer pass at the baseline's 32,760 tokens, per attention backend that needs no download and per
     precision (the official float32 weights under bf16 autocast; bf16 weights): seconds, the pass's FLOPs
     counted from the architecture, and the fraction of this GPU's measured dense bf16 matmul rate;
  b. the baseline and the proposal's A, B, C end to end through the harness (worker=official; no CLIP, no
     fidelity: random weights), per stage and per step, peak memory, under both precisions;
  c. the levers against the baseline, each paired with it (alternating order): batched guidance, guidance
     truncation, regional compile (compile time apart), the best attention backend, bf16 weights, MagCache at
     forced skip rates of 25% and 50% (with random weights only a cache's cost side means anything), and all
     of them combined, at the baseline's full 25 steps, beside the FLOP-limit time;
  d. the harness's overhead against a plain ``WanPipeline`` call of the same preset (paired ratio).

Writes ``report.md``, ``results.json``, ``log.txt`` and plots into ``--out``.

    python benchmarks/gpu_audit.py --out experiments/audit-h200            # on the GPU machine, about 8 min
    python benchmarks/gpu_audit.py --dry-run --out /tmp/audit              # the tiny model on a CPU, every section

Offline install on a GPU machine whose Python already has a CUDA torch (see ../shared/gpu/wheels.sh):
here, ``EXTRA_WHEELS=torchao ../shared/gpu/wheels.sh`` fills ``.whl/`` (about 45 MB with the tree, under the 64
MiB that travel); there, ``python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir
--upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD``, then the command above.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import OmegaConf

from harness.measure.figures import save_figure
from harness.measure.pairing import paired_speedup
from harness.measure.plan import plan
from harness.pipeline.clocks import synchronize
from harness.pipeline.device import CPU_ATTENTION, CUDA_ATTENTION, check_attention, device_label
from harness.pipeline.generate import generate
from harness.pipeline.levers import Speed
from harness.pipeline.load import load_pipeline, use_attention
from harness.pipeline.passes import official_precision
from harness.study.engine.compose import compose_config

PRESETS = ("baseline", "balanced", "aggressive", "quality_first")


class Budget:
    """The seconds left; a section that would not fit is skipped, and the log says so."""

    def __init__(self, seconds: float, log: Callable[[str], None]):
        self.end, self.log = time.monotonic() + seconds, log

    def left(self) -> float:
        return self.end - time.monotonic()

    def run(self, name: str, needs_s: float, section: Callable[[], Any]) -> Any:
        if self.left() < needs_s:
            self.log(f"{name}: skipped ({self.left():.0f} s left, it needs about {needs_s:.0f} s)")
            return {"skipped": f"{self.left():.0f} s left of the budget, needed about {needs_s:.0f} s"}
        started = time.monotonic()
        try:
            result = section()
        except Exception as error:  # a section that breaks is reported; the others still run
            self.log(f"{name}: failed ({type(error).__name__}: {error})".splitlines()[0])
            return {"failed": f"{type(error).__name__}: {error}".splitlines()[0]}
        self.log(f"{name}: done in {time.monotonic() - started:.0f} s")
        return result


def pass_flops(transformer: Any, tokens: int, text_tokens: int) -> float:
    """FLOPs of one transformer pass, counted from the architecture (matmuls only, 2 per multiply-add).

    Per block: self-attention's four projections (8 L d^2) and its scores and values (4 L^2 d), cross-
    attention's query and output projections (4 L d^2), key and value projections of the text (4 T d^2) and
    its scores and values (4 L T d), and the feed-forward (4 L d f). At 480x832x81 (L = 32,760) that is about
    283 TFLOP, 70% of it self-attention.
    """
    config = transformer.config
    d, f, layers = config.num_attention_heads * config.attention_head_dim, config.ffn_dim, config.num_layers
    length, text = tokens, text_tokens
    block = 8 * length * d * d + 4 * length * length * d + 4 * length * d * d + 4 * text * d * d
    block += 4 * length * text * d + 4 * length * d * f
    return float(layers * block)


def dense_rate(device: torch.device, dry: bool) -> float:
    """FLOP/s of a large dense matmul: bf16 on a GPU (the rate a transformer pass can at best reach)."""
    size, dtype = (512, torch.float32) if dry else (8192, torch.bfloat16)
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    times = []
    for _ in range(7):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(5):
            a @ b
        synchronize(device)
        times.append((time.perf_counter() - started) / 5)
    return 2 * size**3 / statistics.median(times[2:])


def overrides(args: argparse.Namespace, *extra: str) -> list[str]:
    """The audit's config: the published architecture made on the device, or the tiny model for a dry run."""
    small = ["model=tiny", f"paths.root_dir={args.out / 'root'}"]
    real = ["model=wan2.1-t2v-1.3b-random", "model.materialize=device", f"paths.root_dir={args.out / 'root'}"]
    quiet = ["prompts=smoke", "quality.clip=false", "quality.fidelity=false", "tracking.video=false", "worker=official"]
    return [*(small if args.dry_run else real), *quiet, *extra]


class Audit:
    """Every section's measurements on one machine."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.lines = args, []
        self.cfg = compose_config(overrides(args))
        self.plan = plan(self.cfg)
        self.solvers = OmegaConf.to_container(self.cfg.solver, resolve=True)
        self.budget = Budget(args.budget_s, self.log)

    def log(self, line: str) -> None:
        stamped = f"[{time.strftime('%H:%M:%S')}] {line}"
        print(stamped, flush=True)
        self.lines.append(stamped)

    def pipeline(self, speed: Speed = Speed()) -> Any:
        return load_pipeline(self.cfg.model, self.plan.worker, speed)

    def request(self, speed: Speed = Speed(), steps: int | None = None) -> Any:
        request = self.plan.request(self.plan.prompts[0], 0)
        return replace(request, speed=speed, steps=steps or request.steps)

    def backends(self, device: torch.device) -> list[str]:
        found = []
        for backend in CPU_ATTENTION if device.type == "cpu" else CUDA_ATTENTION:
            try:
                check_attention(backend, device)
                found.append(backend)
            except ValueError as refused:
                self.log(f"attention {backend}: not here ({refused})")
        return found

    # a. one transformer pass
    def passes(self) -> dict:
        loaded = self.pipeline()
        shape = self.plan.shape
        latent_frames, tokens = loaded.latent_grid(shape.width, shape.height, shape.num_frames)
        rate = dense_rate(loaded.device, self.args.dry_run)
        flops = pass_flops(loaded.pipe.transformer, tokens, self.plan.max_sequence_length)
        self.log(f"dense matmul rate {rate / 1e12:.1f} TFLOP/s; one pass at {tokens} tokens = {flops / 1e12:.1f} TFLOP")
        rows = []
        for precision in ("worker", "bfloat16"):
            speed = Speed(precision=precision)
            for backend in self.backends(loaded.device):
                seconds = self._pass_time(self.pipeline(speed), backend, shape, latent_frames)
                rows.append({"precision": precision, "attention": backend, "seconds": seconds,
                             "fraction_of_dense": flops / seconds / rate})  # fmt: skip
                self.log(f"pass {precision} {backend}: {seconds:.3f} s ({flops / seconds / rate:.0%} of dense)")
        return {"tokens": tokens, "flops": flops, "dense_flops_per_s": rate, "rows": rows}

    def _pass_time(self, loaded: Any, backend: str, shape: Any, latent_frames: int) -> float:
        use_attention(loaded, backend)
        pipe, device = loaded.pipe, loaded.device
        channels, scale = pipe.transformer.config.in_channels, pipe.vae_scale_factor_spatial
        dims = (1, channels, latent_frames, shape.height // scale, shape.width // scale)
        latents = torch.randn(dims, device=device, dtype=loaded.dtype)
        text = torch.randn(1, self.plan.max_sequence_length, pipe.transformer.config.text_dim, device=device,
                           dtype=loaded.dtype)  # fmt: skip
        autocast = self.plan.worker.precision == "autocast_bf16" and device.type == "cuda"
        times = []
        with torch.inference_mode(), official_precision(pipe.transformer, autocast and loaded.dtype == torch.float32):
            for _ in range(2 + self.args.repeats):
                synchronize(device)
                started = time.perf_counter()
                pipe.transformer(hidden_states=latents, timestep=torch.tensor([500], device=device),
                                 encoder_hidden_states=text, return_dict=False)  # fmt: skip
                synchronize(device)
                times.append(time.perf_counter() - started)
        use_attention(loaded, "native")
        return statistics.median(times[2:])

    # b. the proposal's presets end to end
    def presets(self) -> dict:
        found = {}
        for precision in ("worker", "bfloat16"):
            for name in PRESETS:
                if self.budget.left() < self.args.reserve_s:
                    self.log(f"preset {name} ({precision}): skipped, the budget's reserve is reached")
                    continue
                steps = ["preset.sample_steps=2"] if self.args.dry_run else []  # the dry run only exercises it
                chosen = overrides(self.args, f"+experiment={name}", f"speed.precision={precision}", *steps)
                cfg = compose_config(chosen)
                plan_ = plan(cfg)
                loaded = load_pipeline(cfg.model, plan_.worker, plan_.speed)
                request = plan_.request(plan_.prompts[0], 0)
                generate(loaded, replace(request, steps=1), self.solvers)  # warm this shape
                made = generate(loaded, request, self.solvers)
                found[f"{name} {precision}"] = {
                    "steps": request.steps, "size": f"{request.shape.width}x{request.shape.height}",
                    "frames": request.shape.num_frames, "wall_s": made.wall_s, "text_encode_s": made.text_encode_s,
                    "denoise_s": made.denoise_s, "decode_s": made.decode_s, "step_median_s": made.step_median_s,
                    "peak_memory_mb": made.peak_memory_mb,
                }  # fmt: skip
                self.log(f"preset {name} ({precision}): {made.wall_s:.2f} s, {made.step_median_s:.3f} s/step")
        return found

    # c. the levers, each paired with the baseline
    def levers(self, best_backend: str) -> dict:
        steps = self.args.lever_steps
        forced = [1.0] * 100  # ratios of 1: MagCache skips whenever its K and retention allow
        levers = {
            "cfg=batched": Speed(cfg="batched"),
            "guidance_stop=0.5": Speed(guidance_stop=0.5),
            "precision=bfloat16": Speed(precision="bfloat16"),
            f"attention={best_backend}": Speed(attention=best_backend),
            "compile=regional": Speed(compile="regional"),
            "magcache, 25% of steps skipped": Speed(cache="magcache", magcache_k=1, magcache_retention=0.5),
            "magcache, 50% of steps skipped": Speed(cache="magcache", magcache_k=1, magcache_retention=0.0),
        }
        found = {}
        for name, speed in levers.items():
            if self.budget.left() < self.args.reserve_s:
                self.log(f"lever {name}: skipped, the budget's reserve is reached")
                continue
            ratios = tuple(forced[:steps]) if speed.cache == "magcache" else None
            found[name] = self._paired(speed, steps, ratios)
            self.log(f"lever {name}: {found[name]['speedup']}")
        combined = Speed(cfg="batched", precision="bfloat16", attention=best_backend, compile="regional")
        if self.budget.left() >= self.args.reserve_s:
            full = self.plan.preset.sample_steps
            found["combined (batched, bf16, best attention, regional compile)"] = self._paired(combined, full, None)
        return found

    def _paired(self, speed: Speed, steps: int, ratios: tuple | None) -> dict:
        plain, lever = self.pipeline(), self.pipeline(speed)
        base, ours = self.request(steps=steps), replace(self.request(speed, steps), mag_ratios=ratios)
        started = time.perf_counter()
        generate(lever, replace(ours, steps=1), self.solvers)  # warm-up: compilation happens here, timed apart
        warmup_s = time.perf_counter() - started
        generate(plain, replace(base, steps=1), self.solvers)
        base_s, ours_s = [], []
        for pair in range(self.args.pairs):
            sides = [(ours_s, lever, ours), (base_s, plain, base)]
            for times, loaded, request in sides if pair % 2 == 0 else sides[::-1]:
                times.append(generate(loaded, request, self.solvers).wall_s)
        result = paired_speedup(base_s, ours_s)
        return {"steps": steps, "speedup": result.cell(), "baseline_s": result.baseline_s,
                "lever_s": result.preset_s, "warmup_s": warmup_s}  # fmt: skip

    # d. the harness against a plain WanPipeline call
    def overhead(self) -> dict:
        loaded, request = self.pipeline(), self.request(steps=self.args.lever_steps)
        shape = request.shape

        def plain() -> float:
            synchronize(loaded.device)
            started = time.perf_counter()
            with torch.inference_mode():
                loaded.pipe(prompt=request.prompt, negative_prompt=request.negative_prompt, height=shape.height,
                            width=shape.width, num_frames=shape.num_frames, num_inference_steps=request.steps,
                            guidance_scale=request.guidance, output_type="np",
                            generator=torch.Generator(loaded.device).manual_seed(0))  # fmt: skip
            synchronize(loaded.device)
            return time.perf_counter() - started

        harness, raw = [], []
        for pair in range(self.args.pairs):
            order = [
                lambda: raw.append(plain()),
                lambda: harness.append(generate(loaded, request, self.solvers).wall_s),
            ]
            for step in order if pair % 2 == 0 else order[::-1]:
                step()
        result = paired_speedup(raw, harness)
        return {"harness_over_plain": 1 / result.median, "plain_s": result.baseline_s, "harness_s": result.preset_s}


def main(argv: list[str]) -> None:
    args = _arguments(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    audit = Audit(args)
    device = audit.pipeline().device  # the model is made now: the budget counts it
    audit.log(f"model ready on {device_label(device)} after {time.monotonic() - started:.0f} s")
    results: dict[str, Any] = {
        "machine": machine(device),
        "command": " ".join(["python benchmarks/gpu_audit.py", *argv]),
    }
    results["passes"] = audit.budget.run("a. transformer pass", 20, audit.passes)
    best = _best_backend(results["passes"])
    results["presets"] = audit.budget.run("b. presets end to end", 60, audit.presets)
    results["levers"] = audit.budget.run("c. levers", 60, lambda: audit.levers(best))
    results["overhead"] = audit.budget.run("d. harness overhead", 20, audit.overhead)
    results["seconds"] = time.monotonic() - started
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "log.txt").write_text("\n".join(audit.lines) + "\n")
    (args.out / "report.md").write_text(report(results, args, audit.plan.preset.sample_steps))
    plot_passes(results["passes"], args.out / "passes.png")
    audit.log(f"wrote {args.out / 'report.md'} in {results['seconds']:.0f} s")


def machine(device: torch.device) -> dict:
    """The GPU (or CPU), its driver and the libraries, as the report states them."""
    import diffusers

    found = {"device": device_label(device), "torch": torch.__version__, "diffusers": diffusers.__version__,
             "python": platform.python_version(), "cuda": torch.version.cuda}  # fmt: skip
    if device.type == "cuda":
        found["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        try:
            import subprocess

            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            found["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            found["driver"] = "unknown"
    return found


def _best_backend(passes: dict) -> str:
    rows = [r for r in passes.get("rows", []) if r["precision"] == "worker"]
    return min(rows, key=lambda r: r["seconds"])["attention"] if rows else "native"


def report(results: dict, args: argparse.Namespace, baseline_steps: int) -> str:
    """The report's markdown: every section's table, or why it is missing."""
    machine_ = results["machine"]
    lines = [
        f"# Wan 2.1 T2V-1.3B architecture (random weights) on {machine_['device']}\n",
        f"Made by `{results['command']}` in {results['seconds']:.0f} s. torch {machine_['torch']}, diffusers "
        f"{machine_['diffusers']}, CUDA {machine_['cuda']}, driver {machine_.get('driver', 'n/a')}."
        + (" **Dry run: the tiny model on a CPU; no figure here is a GPU's.**" if args.dry_run else "") + "\n",
        *_pass_lines(results["passes"], baseline_steps),
        *_table("## b. The baseline and the proposal's presets, end to end (worker=official)",
                results["presets"], ["steps", "size", "frames", "wall_s", "text_encode_s", "denoise_s",
                                     "decode_s", "step_median_s", "peak_memory_mb"]),
        *_table("## c. Levers, each paired with the baseline (alternating order)", results["levers"],
                ["steps", "speedup", "baseline_s", "lever_s", "warmup_s"]),
        *_table("## d. The harness against a plain WanPipeline call", {"paired": results["overhead"]},
                ["harness_over_plain", "plain_s", "harness_s"]),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _pass_lines(passes: dict, steps: int) -> list[str]:
    if "rows" not in passes:
        return ["## a. One transformer pass\n", f"{passes}\n"]
    limit = 2 * steps * passes["flops"] / passes["dense_flops_per_s"]
    lines = [
        "## a. One transformer pass\n",
        f"{passes['tokens']} tokens: {passes['flops'] / 1e12:.1f} TFLOP per pass (counted from the architecture); "
        f"this machine's dense matmul rate {passes['dense_flops_per_s'] / 1e12:.1f} TFLOP/s. At that rate the "
        f"baseline's {steps} steps x 2 passes take {limit:.1f} s of transformer work (the FLOP limit).\n",
        "| precision | attention | s/pass | fraction of the dense rate |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['precision']} | {r['attention']} | {r['seconds']:.3f} | {r['fraction_of_dense']:.0%} |"
              for r in passes["rows"]]  # fmt: skip
    return [*lines, "", "![seconds per pass](passes.png)\n"]


def _table(title: str, rows: dict, columns: list[str]) -> list[str]:
    if not isinstance(rows, dict) or "skipped" in rows or "failed" in rows:
        return [f"{title}\n", f"{rows}\n"]
    lines = [f"{title}\n", "| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, row in rows.items():
        cells = [f"{row[c]:.3f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def plot_passes(passes: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    if "rows" not in passes:
        return
    figure, axis = plt.subplots(figsize=(7, 3.5))
    labels = [f"{r['precision']}\n{r['attention']}" for r in passes["rows"]]
    axis.bar(labels, [r["seconds"] for r in passes["rows"]], color="tab:blue")
    axis.axhline(passes["flops"] / passes["dense_flops_per_s"], color="tab:red", label="FLOP limit at the dense rate")
    axis.set(ylabel="seconds per transformer pass")
    axis.legend()
    save_figure(figure, path)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where report.md, results.json, log.txt go")
    parser.add_argument("--dry-run", action="store_true", help="the tiny model on a CPU: every section, quickly")
    parser.add_argument("--budget-s", type=float, default=480, help="stop starting work after this many seconds")
    parser.add_argument("--reserve-s", type=float, default=45, help="budget kept back for the report")
    parser.add_argument("--lever-steps", type=int, default=10, help="steps of each lever's pairs")
    parser.add_argument("--pairs", type=int, default=2, help="pairs per lever")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per backend")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.lever_steps, args.repeats, args.pairs = min(args.lever_steps, 2), min(args.repeats, 1), 2
    return args


if __name__ == "__main__":
    main(sys.argv[1:])
