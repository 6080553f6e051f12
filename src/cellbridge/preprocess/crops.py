"""From fields to crops: the segmentation pass (object tables, size and border filters) and
the cropping pass (windows, orientation, resizing, intensity normalisation).

The rules are described in :mod:`cellbridge.preprocess.image`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.transform import resize

from .._io import InputError
from .segment import segment_nuclei

from .fields import MASK_FOLDER, find_mask_file, read_label_mask

logger = logging.getLogger("cellbridge")


# --------------------------------------------------------------------------- segmentation pass


@dataclass
class _Field:
    """One segmented field kept between the segmentation and cropping passes."""

    path: Path
    values: np.ndarray  # background-subtracted intensity, float32
    labels: np.ndarray  # label image
    table: pd.DataFrame  # kept nuclei: label, centroid, bbox, area


_BBOX = ["bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col"]


def _object_table(labels: np.ndarray) -> pd.DataFrame:
    """Label, area, centroid and bounding box (exclusive max) of every object of a label image."""
    records = []
    # Work inside each object's bounding box: fields are mostly background, so
    # this is much cheaper than whole-field weighted bincounts.
    for index, sl in enumerate(ndi.find_objects(labels)):
        if sl is None:
            continue
        rows, cols = np.nonzero(labels[sl] == index + 1)
        records.append(
            (
                index + 1,
                float(rows.size),
                sl[0].start + rows.mean(),
                sl[1].start + cols.mean(),
                sl[0].start,
                sl[1].start,
                sl[0].stop,
                sl[1].stop,
            )
        )
    table = pd.DataFrame.from_records(records, columns=["label", "area", "centroid_y", "centroid_x", *_BBOX])
    return table.astype({"label": np.int64, "area": float, "centroid_y": float, "centroid_x": float})


def _filter_objects(
    table: pd.DataFrame, shape: tuple[int, int], *, min_area: float, max_area: float | None, exclude_border: bool
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop objects outside the size range or touching the field border; count each reason."""
    area = table["area"].to_numpy()
    small = area < min_area
    large = (area > max_area) & ~small if max_area is not None else np.zeros_like(small)
    border = np.zeros_like(small)
    if exclude_border:
        bbox = table[_BBOX].to_numpy()
        border = (bbox[:, 0] == 0) | (bbox[:, 1] == 0) | (bbox[:, 2] == shape[0]) | (bbox[:, 3] == shape[1])
        border &= ~small & ~large
    keep = ~(small | large | border)
    counts = {"small": int(small.sum()), "large": int(large.sum()), "border": int(border.sum())}
    return table[keep].reset_index(drop=True), counts


def _segment_field(
    path: Path,
    image: np.ndarray,
    *,
    segmentation: str,
    segment_kwargs: dict[str, Any],
) -> tuple[np.ndarray, str]:
    """Label image of a field from its user mask or the segmenter; also return the method used."""
    mask_path = find_mask_file(path) if segmentation in ("auto", "masks") else None
    if mask_path is not None:
        return read_label_mask(mask_path, shape=image.shape), "masks"
    if segmentation == "masks":
        raise InputError(
            path,
            f"segmentation='masks' but no mask found (looked for <stem>_mask/_masks/_labels and {MASK_FOLDER}/{path.name})",
        )
    if segmentation == "otsu":
        # The plain reference: global Otsu threshold, connected components, no splitting.
        opts = segment_kwargs | {"threshold": "otsu", "background_sigma": None}
        return segment_nuclei(image, method="threshold", **opts), "otsu"
    return segment_nuclei(image, method="watershed", **segment_kwargs), "watershed"


# --------------------------------------------------------------------------- cropping


def extract_crops(
    values: np.ndarray,
    labels: np.ndarray,
    table: pd.DataFrame,
    *,
    window: np.ndarray | float,
    crop_size: int,
    orientation: Literal["align", "keep"] = "align",
) -> tuple[np.ndarray, int]:
    """Cut each nucleus out of a field, mask its surroundings, resize to ``crop_size``.

    Parameters
    ----------
    values
        2D intensity field (background already subtracted).
    labels
        2D label image.
    table
        One row per nucleus with ``label``, ``centroid_y``, ``centroid_x`` and bbox columns.
    window
        Side of the square window in field pixels, one value or one per nucleus.
    crop_size
        Output side ``S``.
    orientation
        ``"align"``: rotate each nucleus so its major axis is horizontal and flip it so
        its stain mass leans to the top left (:func:`canonical_orientation`);
        ``"keep"``: as in the field.

    Returns
    -------
    crops, n_truncated
        ``(n, S, S)`` float32 crops (pixels outside the nucleus are 0) and the
        number of nuclei whose bounding box did not fit in their window.
    """
    n = len(table)
    sides = np.broadcast_to(np.asarray(window, dtype=float), (n,))
    int_sides = np.maximum(1, np.ceil(sides).astype(int))
    H, W = values.shape
    patches = []
    truncated = 0
    for row, side in zip(table.itertuples(index=False), int_sides, strict=True):
        # Top-left corner that puts the centroid at the window's centre.
        top = int(np.floor(row.centroid_y + 0.5 - side / 2))
        left = int(np.floor(row.centroid_x + 0.5 - side / 2))
        r0, r1 = max(top, 0), min(top + side, H)
        c0, c1 = max(left, 0), min(left + side, W)
        patch = np.zeros((side, side), dtype=np.float32)
        inside = labels[r0:r1, c0:c1] == row.label
        patch[r0 - top : r1 - top, c0 - left : c1 - left] = np.where(inside, values[r0:r1, c0:c1], 0.0)
        if orientation == "align":
            patch = canonical_orientation(patch)
        truncated += bool(
            row.bbox_min_row < top
            or row.bbox_min_col < left
            or row.bbox_max_row > top + side
            or row.bbox_max_col > left + side
        )
        patches.append(patch)
    if n == 0:
        return np.zeros((0, crop_size, crop_size), dtype=np.float32), 0
    if np.all(int_sides == int_sides[0]):
        # One resize call for the whole stack (the first axis keeps its size
        # and gets no smoothing).
        return _resize_stack(np.stack(patches), crop_size), truncated
    return np.concatenate([_resize_stack(p[None], crop_size) for p in patches]), truncated


def canonical_orientation(patch: np.ndarray) -> np.ndarray:
    """Rotate a masked nucleus patch so its major axis is horizontal, then flip it so the
    stain mass leans to the top left.

    Nuclei lie at arbitrary angles in a field. Left in the crops, the angle is the largest
    source of image variation that no other modality shares, and an autoencoder spends
    latent dimensions on it; aligned crops leave the latent to size, shape and chromatin.
    The angle comes from the second moments of the mask (pixels > 0), the flips from the
    sign of the intensity-weighted third moments along each axis.
    """
    rows, cols = np.nonzero(patch > 0)
    if rows.size < 3:
        return patch
    y, x = rows - rows.mean(), cols - cols.mean()
    angle = 0.5 * np.degrees(np.arctan2(2.0 * (x * y).mean(), (x * x).mean() - (y * y).mean()))
    # Rotate about the centroid: shift it to the patch centre first.
    centre = (np.asarray(patch.shape) - 1) / 2.0
    offset = centre - (rows.mean(), cols.mean())
    values = ndi.rotate(ndi.shift(patch, offset, order=1), angle, reshape=False, order=1)
    # Interpolation smears the outline; the mask moved by nearest neighbour keeps the
    # nucleus' area and a zero background.
    mask = ndi.rotate(ndi.shift((patch > 0).astype(np.float32), offset, order=0), angle, reshape=False, order=0)
    out = np.where(mask > 0.5, np.clip(values, 0.0, None), 0.0)
    w = out.sum()
    if w > 0:
        yy, xx = np.indices(out.shape) - centre[:, None, None]
        if (out * xx**3).sum() > 0:
            out = out[:, ::-1]
        if (out * yy**3).sum() > 0:
            out = out[::-1, :]
    return np.ascontiguousarray(out, dtype=np.float32)


def _resize_stack(stack: np.ndarray, crop_size: int) -> np.ndarray:
    """Resize an ``(n, s, s)`` stack to ``(n, crop_size, crop_size)``, anti-aliased when shrinking."""
    n, side = stack.shape[0], stack.shape[1]
    if side == crop_size:
        return stack.astype(np.float32)
    out = resize(
        stack, (n, crop_size, crop_size), order=1, anti_aliasing=side > crop_size, preserve_range=True
    )
    return out.astype(np.float32)


def _window_sides(tables: list[pd.DataFrame], *, window: str, window_size: float | str, padding: float) -> np.ndarray:
    """Window side (field pixels) per nucleus for the ``fixed`` or ``bbox`` scheme."""
    longest = np.concatenate(
        [
            np.maximum(t["bbox_max_row"] - t["bbox_min_row"], t["bbox_max_col"] - t["bbox_min_col"]).to_numpy(float)
            for t in tables
        ]
    )
    if window == "bbox":
        return longest * (1 + padding)
    if window_size == "auto":
        side = float(np.percentile(longest, 95)) * (1 + padding)
    else:
        side = float(window_size)
    return np.full(longest.shape, side)


def _normalise(crops: np.ndarray, *, normalize: str, percentile: float, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Scale background-subtracted crops; return them and the data-set scale used (1 if none)."""
    crops = np.maximum(crops, 0.0)
    if normalize == "none":
        return crops.astype(np.float32), 1.0
    if normalize == "crop":
        peak = crops.reshape(len(crops), -1).max(axis=1)
        out = np.divide(crops, peak[:, None, None], out=np.zeros_like(crops), where=peak[:, None, None] > 0)
        return out.astype(np.float32), 1.0
    if normalize != "dataset":
        raise ValueError(f"normalize must be 'dataset', 'crop' or 'none', got {normalize!r}")
    if scale is None:
        fg = crops[crops > 0]
        scale = float(np.percentile(fg, percentile)) if fg.size else 1.0
        scale = scale if scale > 0 else 1.0
    return np.clip(crops / scale, 0.0, 1.0).astype(np.float32), scale
