"""Prompt adherence in the toy world, from pixels alone: a metric that needs no model.

:func:`adherence` tells whether a video shows the colour, shape and direction its
caption names; :func:`adherence_metrics` turns that into the 1/0 metrics a run logs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from harness.toy.world import COLORS, parse_caption


def _to_uint8_scale(frames: np.ndarray) -> np.ndarray:
    """Frames as float32 in [0, 255]; floats in [0, 1] (a pipeline's output) are scaled."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3), got shape {frames.shape}")
    out = frames.astype(np.float32)
    if frames.dtype != np.uint8 and out.max() <= 1.0 + 1e-6:
        out *= 255.0
    return out


def _frame_features(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Centroid (x, y), fill ratio and relative centroid height of the largest blob."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    blob = labels == (int(np.argmax(sizes)) + 1)
    if blob.sum() < 4:
        return None
    ys, xs = np.nonzero(blob)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    fill = blob.sum() / ((y1 - y0) * (x1 - x0))
    rel_y = (ys.mean() + 0.5 - y0) / (y1 - y0)  # 0.5 for symmetric shapes, 2/3 for a triangle
    return float(xs.mean()), float(ys.mean()), float(fill), float(rel_y)


def adherence(frames: np.ndarray, caption: str) -> dict[str, object]:
    """Check from pixels whether a video shows its caption.

    The background is the median colour; foreground is what differs from it by more
    than half the strongest difference. Colour: the mean of the strongest foreground
    pixels, nearest named colour. Shape, from the largest blob of each frame (median over
    frames): a centroid low in its bounding box means a triangle (apex up), else a fill
    ratio above 0.88 a square, else a circle. Direction: the larger axis of the centroid's
    displacement between the first and the last quarter of the frames.

    Args:
        frames: ``(F, H, W, 3)`` video, uint8 or float in [0, 1].
        caption: a world caption (see :func:`parse_caption`).

    Returns:
        ``{"color", "shape", "direction"}`` detected (``None`` if nothing was found) and
        booleans ``color_ok``, ``shape_ok``, ``direction_ok``, ``all_ok``.

    Raises:
        ValueError: if the caption is not a world caption or frames are not (F, H, W, 3).
    """
    want = parse_caption(caption)
    video = _to_uint8_scale(frames)
    background = np.median(video.reshape(-1, 3), axis=0)
    dist = np.linalg.norm(video - background, axis=-1)
    peak = float(np.percentile(dist, 99.5))
    found: dict[str, object] = {"color": None, "shape": None, "direction": None}
    if peak >= 30.0:
        core = video[dist > 0.7 * peak].mean(axis=0)
        names = list(COLORS)
        found["color"] = names[int(np.argmin([np.linalg.norm(core - COLORS[n]) for n in names]))]
        feats = [f for f in (_frame_features(d > 0.5 * peak) for d in dist) if f is not None]
        if len(feats) >= 2:
            arr = np.array(feats)
            fill, rel_y = np.median(arr[:, 2]), np.median(arr[:, 3])
            found["shape"] = "triangle" if rel_y > 0.585 else "square" if fill > 0.88 else "circle"
            quarter = max(1, len(arr) // 4)
            move = arr[-quarter:, :2].mean(axis=0) - arr[:quarter, :2].mean(axis=0)
            if abs(move[0]) >= abs(move[1]):
                found["direction"] = "right" if move[0] > 0 else "left"
            else:
                found["direction"] = "down" if move[1] > 0 else "up"
    result = dict(found)
    for key, expected in zip(("color", "shape", "direction"), want):
        result[f"{key}_ok"] = found[key] == expected
    result["all_ok"] = all(result[f"{k}_ok"] for k in ("color", "shape", "direction"))
    return result


def adherence_metrics(frames: np.ndarray, prompt: str) -> dict[str, float]:
    """1/0 per named colour, shape and direction shown; nothing for a prompt that is not a world caption."""
    try:
        found = adherence(frames, prompt)
    except ValueError:  # not a world caption: nothing to check against
        return {}
    return {f"adherence_{key}": float(found[f"{key}_ok"]) for key in ("color", "shape", "direction")}
