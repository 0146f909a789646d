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


def _labelled(frames: np.ndarray, zoom: int, label: str, height: int) -> np.ndarray:
    """Frames enlarged by a whole factor (nearest: pixels stay pixels), padded to ``height``, a label above."""
    count, rows, columns = frames.shape[:3]
    band = 4 + 13 * (label.count("\n") + 1)
    canvas = np.full((count, band + height, columns * zoom, 3), 255, np.uint8)
    canvas[:, band : band + rows * zoom] = frames.repeat(zoom, axis=1).repeat(zoom, axis=2)
    header = Image.new("RGB", (columns * zoom, band), "white")
    ImageDraw.Draw(header).text((3, 3), label, fill="black")
    canvas[:, :band] = np.asarray(header)
    return canvas


def side_by_side(
    videos: list[np.ndarray], labels: list[str], min_height: int = 320, stacked: bool = False
) -> np.ndarray:
    """Videos next to each other, labelled, for a person to compare: display only, never measured.

    Each video is enlarged by a whole factor so it is at least ``min_height`` high (small
    models make postage stamps); a shorter video holds its last frame; the result is padded
    to multiples of 16 so it encodes as is.

    Args:
        videos: uint8 (F, H, W, 3) each, sizes and lengths may differ.
        labels: one line above each video.
        min_height: the displayed height each video reaches at least.
        stacked: one above the other instead of side by side (for a frame grid: a row per video).

    Returns:
        uint8 (F, H, W, 3) frames of the longest video's length.
    """
    count = max(len(v) for v in videos)
    height = max(v.shape[1] * max(1, -(-min_height // v.shape[1])) for v in videos)
    panels = []
    for video, label in zip(videos, labels):
        held = video[np.minimum(np.arange(count), len(video) - 1)]
        panels.append(_labelled(held, max(1, -(-min_height // video.shape[1])), label, height))
    if stacked:
        width = max(p.shape[2] for p in panels)
        panels = [np.pad(p, ((0, 0), (0, 0), (0, width - p.shape[2]), (0, 0)), constant_values=255) for p in panels]
    joined = np.concatenate(panels, axis=1 if stacked else 2)
    pad_rows, pad_columns = -joined.shape[1] % 16, -joined.shape[2] % 16
    return np.pad(joined, ((0, 0), (0, pad_rows), (0, pad_columns), (0, 0)), constant_values=255)
