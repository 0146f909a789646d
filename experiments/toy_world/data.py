"""Training data of the toy world: batches of clips drawn by ``harness.toy.world``.

Clip sizes follow the harness's mapping of the worker's presets onto the toy model
(width and height / 10, rounded to a multiple of 16; frames / 4, as 4n+1):
480*832 x 83 -> 48 wide x 80 high x 17, x 64 -> 13, and 384*640 x 48 -> 32 x 64 x 9.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.toy.world import captions, parse_caption, render_clip

# (frames, height, width) -> share of training batches
MAIN_SIZE: tuple[int, int, int] = (17, 80, 48)
VAE_SIZES: dict[tuple[int, int, int], float] = {
    (17, 80, 48): 0.45,
    (9, 80, 48): 0.25,
    (13, 80, 48): 0.15,
    (9, 64, 32): 0.15,
}
TRANSFORMER_SIZES: dict[tuple[int, int, int], float] = {
    (17, 80, 48): 0.40,
    (13, 80, 48): 0.35,
    (9, 80, 48): 0.10,
    (9, 64, 32): 0.15,
}


def pick_size(rng: np.random.Generator, sizes: dict[tuple[int, int, int], float]) -> tuple[int, int, int]:
    """Draw one clip size by its share.

    Args:
        rng: random generator.
        sizes: ``(frames, height, width)`` -> share (shares sum to 1).

    Returns:
        ``(frames, height, width)``.
    """
    keys = list(sizes)
    return keys[rng.choice(len(keys), p=np.array([sizes[k] for k in keys]))]


def to_model_range(clips: np.ndarray) -> torch.Tensor:
    """uint8 clips ``(B, F, H, W, 3)`` -> float ``(B, 3, F, H, W)`` in [-1, 1] (the VAE's range).

    Args:
        clips: uint8 array.

    Returns:
        float32 tensor.
    """
    return torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def clip_batch(
    rng: np.random.Generator, batch: int, size: tuple[int, int, int], texts: list[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Render a batch of random clips of one size.

    Args:
        rng: random generator (captions and render seeds are drawn from it).
        batch: number of clips.
        size: ``(frames, height, width)``.
        texts: captions to draw; random world captions if ``None``.

    Returns:
        uint8 clips ``(batch, F, H, W, 3)`` and their captions.
    """
    all_captions = captions()
    if texts is None:
        texts = [all_captions[i] for i in rng.integers(len(all_captions), size=batch)]
    frames, height, width = size
    clips = np.stack(
        [render_clip(*parse_caption(t), frames, height, width, seed=int(rng.integers(2**31))) for t in texts]
    )
    return clips, texts


class ThreadGovernor:
    """Use 2 torch threads on a quiet machine and 1 while other processes load the CPUs.

    On 2 shared cores, two threads of which one is often descheduled wait on each other
    at every parallel region: a step then takes several times longer than with one.

    Args:
        every: check the load every this many calls.
    """

    def __init__(self, every: int = 10) -> None:
        import psutil

        self.every, self.calls = every, 0
        self.me = psutil.Process()
        self.psutil = psutil
        self.cores = psutil.cpu_count() or 1
        psutil.cpu_percent()
        self.me.cpu_percent()

    def __call__(self) -> None:
        """Count one step; every ``every`` steps set the thread count from the recent load."""
        self.calls += 1
        if self.calls % self.every:
            return
        total = self.psutil.cpu_percent() * self.cores  # percent of one core, all processes
        others = total - self.me.cpu_percent()
        torch.set_num_threads(1 if others > 40 else min(2, self.cores))
