"""Video files and pictures of them: mp4 (ffmpeg through imageio) and a PNG frame grid."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw


def write_mp4(frames: np.ndarray, path: Path, fps: int = 16) -> Path:
    """Write uint8 frames (F, H, W, 3) as an H.264 mp4 (yuv420p, plays everywhere).

    Args:
        frames: the video; height and width multiples of 16 (so ffmpeg does not resize).
        path: destination ``.mp4``.
        fps: frames per second (Wan writes 16).

    Returns:
        ``path``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    iio.imwrite(path, frames, fps=fps, codec="libx264", macro_block_size=16, pixelformat="yuv420p")
    return path


def read_video(path: Path) -> np.ndarray:
    """Read a video file back as uint8 (F, H, W, 3)."""
    return np.asarray(iio.imread(path))


def frame_grid(frames: np.ndarray, path: Path, columns: int = 8, min_height: int = 160) -> Path:
    """Save evenly spaced frames side by side, numbered, as a PNG.

    Small videos are enlarged (nearest neighbour) so the grid is readable.

    Args:
        frames: uint8 (F, H, W, 3).
        path: destination ``.png``.
        columns: how many frames to show (at most F).
        min_height: frames shorter than this are scaled up by a whole factor.

    Returns:
        ``path``.
    """
    count = min(columns, len(frames))
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    height, width = frames.shape[1:3]
    zoom = max(1, -(-min_height // height))
    label_height, gap = 14, 4
    tile_w, tile_h = width * zoom, height * zoom
    grid = Image.new("RGB", (count * (tile_w + gap) - gap, tile_h + label_height), "white")
    draw = ImageDraw.Draw(grid)
    for column, index in enumerate(picks):
        tile = Image.fromarray(frames[index]).resize((tile_w, tile_h), Image.NEAREST)
        x = column * (tile_w + gap)
        grid.paste(tile, (x, label_height))
        draw.text((x + 2, 1), f"frame {index}", fill="black")
    grid.save(path)
    return path
