"""Nucleus images: read fields, segment, crop, measure and build the image AnnData.

Inputs accepted by :func:`prepare_image`
----------------------------------------
* **Fields**: a folder, a glob pattern (``"data/*.tif"``) or one file of 2D
  fields or 3D stacks: TIFF (read with tifffile) or PNG/JPEG. Stacks are
  max-projected along z; RGB images whose channels are identical become one
  channel; other multi-channel images need ``channel`` (the nuclear stain).
* **User masks** (optional), found *beside* each field: ``<stem>_mask.tif``,
  ``<stem>_masks.tif`` or ``<stem>_labels.tif`` (``.tiff``/``.png`` too) in the
  field's folder, or a file with the same name in a sibling ``masks/`` folder
  (``fields/a.tif`` -> ``fields/masks/a.tif``). Files with these suffixes are
  never listed as fields. With ``segmentation="auto"`` (default) a field with a
  mask uses it and the others are segmented; ``"masks"`` requires a mask for
  every field; ``"watershed"`` / ``"otsu"`` ignore masks.
* **Ready crops**: ``.npy`` of shape ``(n, H, W)`` or ``.h5ad`` with
  ``obsm["image"]``; they are resized to ``crop_size`` and normalised, and their
  features computed, but not segmented.

Crops
-----
Each kept nucleus (not touching the field border, ``min_area <= area <=
max_area``) is cut out in a square window centred on its centroid; pixels
outside its own label (background *and* neighbours) are set to 0, and the window
is resized (anti-aliased) to ``crop_size x crop_size``.

* ``window="fixed"`` (default): one window side for the whole data set,
  ``window_size`` pixels, or with ``"auto"`` the 95th percentile of the nuclei's
  longest bounding-box side times ``1 + padding``. Every crop then has the same
  physical scale, so a small nucleus looks small: absolute size, which tracks
  cell state, survives in the crops. Nuclei larger than the window are truncated
  (their number is logged).
* ``window="bbox"``: a tight window of side ``max(bbox) * (1 + padding)`` per
  nucleus; shape detail is maximal but size is normalised away (it remains in
  ``obsm["morphology_native"]``).

Orientation: by default (``orientation="align"``) each nucleus is rotated about its
centroid so that its major axis is horizontal and flipped so that its stain mass leans
to the top left. The angle at which a nucleus happens to lie is pure imaging nuisance
that no other modality shares; removing it keeps the autoencoder's latent for size,
shape and chromatin. Rotation-invariant features are unchanged by it.

Intensity: each field's background (median outside the dilated objects) is
subtracted, then ``normalize="dataset"`` (default) divides by the data set's
``percentile``-th percentile of nucleus intensity and clips to [0, 1], so the
relative brightness of nuclei, which carries biological signal (DNA content,
compaction), is kept. ``normalize="crop"`` scales each crop to its own maximum
(only shape and chromatin pattern remain); ``"none"`` keeps background-subtracted
raw units.

Features
--------
``X`` holds :func:`cellbridge.preprocess.morphology.crop_features` of the crops
themselves, so measured nuclei and nuclei *predicted* by a decoder are measured
by the same code on the same kind of input and are directly comparable. Shape
and intensity features at native resolution (microscope pixel units, from the
segmentation mask, same column names) are kept in ``obsm["morphology_native"]``.

Memory: the fields of a data set are held in memory between the segmentation
pass and the cropping pass (needed to size the fixed window from all nuclei),
about 6 bytes per pixel.
"""

from __future__ import annotations

import glob
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.transform import resize

from .._io import InputError, require_path, save_figure
from ..contract import IMAGE_KEY, NUCLEUS_POSITION, SPLIT_KEY, check_split, finalize_domain
from ..truth import match_nuclei
from .morphology import crop_features, field_features
from .segment import ThresholdSpec, field_background, segment_nuclei

logger = logging.getLogger("cellbridge")

__all__ = [
    "annotate_nuclei",
    "extract_crops",
    "find_image_files",
    "find_mask_file",
    "match_nuclei",
    "plot_image_qc",
    "prepare_image",
    "read_crops",
    "read_field",
    "read_label_mask",
]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
MASK_STEM_SUFFIXES = ("_mask", "_masks", "_labels")
MASK_FOLDER = "masks"
CROP_SUFFIXES = (".npy", ".h5ad")
# Native-resolution features kept beside the crop features: size and brightness
# in microscope units (chromatin layout and texture are measured on the crops).
NATIVE_GROUPS = ("shape", "intensity")


# --------------------------------------------------------------------------- reading


def _is_mask_name(path: Path) -> bool:
    """True for files named like user masks (``<stem>_mask.tif`` ...)."""
    return path.stem.lower().endswith(MASK_STEM_SUFFIXES)


def find_image_files(source: str | os.PathLike) -> list[Path]:
    """List the image fields of a folder, glob pattern or single file.

    Parameters
    ----------
    source
        A folder (its image files, not recursive), a glob pattern such as
        ``"data/plate1/*.tif"``, or one image file.

    Returns
    -------
    list of pathlib.Path
        Sorted image files (``.tif``, ``.tiff``, ``.png``, ``.jpg``, ``.jpeg``),
        without mask files (``*_mask``, ``*_masks``, ``*_labels``).

    Raises
    ------
    InputError
        If the path does not exist, or the folder/pattern holds no image.
    """
    text = str(source)
    # an existing path is taken literally, so a field named "plate[1].tif" is not a pattern
    if glob.has_magic(text) and not Path(text).exists():
        candidates = [Path(p) for p in glob.glob(text)]
        what = "glob pattern matches no image field"
    else:
        path = require_path(source, "image input")
        if path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(path, f"not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
            return [path]
        candidates = list(path.iterdir())
        what = f"folder contains no image field ({', '.join(IMAGE_SUFFIXES)})"
    files = sorted(
        p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _is_mask_name(p)
    )
    if not files:
        raise InputError(text, what)
    return files


def find_mask_file(field: str | os.PathLike) -> Path | None:
    """Return the user label mask beside a field, or ``None``.

    Looks for ``<stem>_mask``, ``<stem>_masks`` or ``<stem>_labels`` with any
    image suffix in the field's folder, then for ``masks/<field name>``.
    """
    field = Path(field)
    for tag in MASK_STEM_SUFFIXES:
        for suffix in IMAGE_SUFFIXES:
            candidate = field.with_name(f"{field.stem}{tag}{suffix}")
            if candidate.is_file():
                return candidate
    candidate = field.parent / MASK_FOLDER / field.name
    return candidate if candidate.is_file() else None


def _read_array(path: Path) -> tuple[np.ndarray, str | None]:
    """Read an image file; return the array and its axes string when the format records one."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return series.asarray(), series.axes
        from skimage import io as skio

        return np.asarray(skio.imread(path)), None
    except Exception as exc:  # every reader failure becomes one clear message
        raise InputError(path, f"cannot read image: {type(exc).__name__}: {exc}") from exc


def _select_channel(arr: np.ndarray, axis: int, channel: int | None, path: Path) -> np.ndarray:
    """Pick ``channel`` along ``axis``; collapse identical channels when none is given."""
    n = arr.shape[axis]
    if channel is not None:
        if not -n <= channel < n:
            raise InputError(path, f"channel {channel} requested but the image has {n} channels")
        return np.take(arr, channel, axis=axis)
    colour = np.take(arr, range(min(n, 3)), axis=axis)  # an alpha channel is not a stain
    first = np.take(colour, 0, axis=axis)
    if all(np.array_equal(first, np.take(colour, k, axis=axis)) for k in range(1, colour.shape[axis])):
        return first
    raise InputError(path, f"image has {n} different channels; set `channel` to the nuclear stain")


def read_field(path: str | os.PathLike, *, channel: int | None = None) -> np.ndarray:
    """Read one field as a 2D float32 image.

    Parameters
    ----------
    path
        TIFF, PNG or JPEG file.
    channel
        Channel holding the nuclear stain for multi-channel images. TIFF
        channel axes (``C``, or an RGB ``S`` axis) are read from the file's
        metadata; otherwise the last axis of a ``(H, W, <=4)`` image, or the
        first axis of another 3D image, is the channel axis. An unnamed axis of
        at most 4 planes may be channels or z-planes: without ``channel`` it is
        an error rather than a max-projection that could mix stains.

    Returns
    -------
    numpy.ndarray
        2D float32 field. Remaining non-spatial axes (z, time, unnamed) are
        max-projected; RGB images with identical channels give that channel.

    Raises
    ------
    InputError
        Unreadable file, ambiguous channels, or a shape that is not 2D after
        channel selection and projection.
    """
    path = require_path(path, "image field")
    arr, axes = _read_array(path)
    if axes is None or len(axes) != arr.ndim:
        # Without metadata: (H, W, <=4) is channels-last colour, other 3D is (planes, H, W).
        axes = "YXS" if arr.ndim == 3 and arr.shape[-1] <= 4 and arr.shape[0] > 4 else "Q" * (arr.ndim - 2) + "YX"
    if arr.ndim < 2 or arr.ndim > 5 or not axes.endswith(("YX", "YXS")):
        raise InputError(path, f"expected a 2D field or 3D stack, got an array of shape {arr.shape}")
    # Drop singleton axes so (1, H, W) stacks and 1-channel images are plain fields.
    keep = [i for i, (s, a) in enumerate(zip(arr.shape, axes, strict=True)) if s > 1 or a in "YX"]
    arr = arr.reshape([arr.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    channel_axis = next((i for i, a in enumerate(axes) if a == "C"), None)
    if channel_axis is None and "S" in axes:
        # samples: RGB last, or planar first (tifffile reads a plain (3, H, W) array as "SYX")
        channel_axis = axes.index("S")
    unnamed = [i for i, a in enumerate(axes) if a == "Q"]
    if channel_axis is None and channel is not None and arr.ndim == 3 and unnamed == [0]:
        channel_axis = 0  # a 3D array without a named channel axis, channel requested
    elif channel_axis is None and channel is not None and arr.ndim > 2:
        raise InputError(
            path,
            f"channel {channel} requested, but no axis of this {arr.shape} image is known to hold channels; "
            "save it with axis metadata (e.g. tifffile.imwrite(..., metadata={'axes': 'ZCYX'}))",
        )
    elif channel_axis is None and channel is None and any(arr.shape[i] <= 4 for i in unnamed):
        # without metadata a short leading axis may be channels as well as z-planes, and
        # max-projecting channels together would mix other stains into the nuclei
        raise InputError(
            path,
            f"an unnamed axis of this {arr.shape} image may hold channels or z-planes; set `channel` to the nuclear "
            "stain if they are channels, or save z-stacks with axis metadata (e.g. tifffile.imwrite(..., "
            "metadata={'axes': 'ZYX'})) to have them max-projected",
        )
    if channel_axis is not None:
        arr = _select_channel(arr, channel_axis, channel, path)
        axes = axes[:channel_axis] + axes[channel_axis + 1 :]
    elif channel is not None and arr.ndim == 2:
        raise InputError(path, f"channel {channel} requested but the image has a single channel")
    if arr.ndim > 2:
        arr = arr.max(axis=tuple(range(arr.ndim - 2)))
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise InputError(path, f"could not reduce the image to a 2D field (shape {arr.shape})")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        # NaN/inf would defeat every threshold and be reported as "no nucleus found"
        bad = int((~np.isfinite(arr)).sum())
        raise InputError(path, f"{bad} of {arr.size} pixels are NaN or infinite; fill or crop them before segmentation")
    return arr.astype(np.float32)


def read_label_mask(path: str | os.PathLike, *, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a user label mask (integer labels, or a binary mask split into connected components).

    Parameters
    ----------
    path
        TIFF or PNG mask.
    shape
        Expected shape (the field's); a mismatch raises :class:`InputError`.
    """
    path = require_path(path, "label mask")
    arr, _ = _read_array(path)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise InputError(path, f"label mask must be 2D, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise InputError(path, f"label mask shape {arr.shape} differs from its field's {tuple(shape)}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.mod(arr, 1) == 0):
            raise InputError(path, "label mask has non-integer values")
    elif not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool:
        raise InputError(path, f"label mask has unsupported dtype {arr.dtype}")
    if arr.min() < 0:
        raise InputError(path, "label mask has negative labels")
    labels = arr.astype(np.int64)
    if labels.max() <= 1 or np.unique(labels).size == 2 and labels.max() == 255:
        # A binary mask (0/1 or 0/255): split it into connected objects.
        labels, _ = ndi.label(labels > 0)
    return labels.astype(np.int32)


def read_crops(path: str | os.PathLike) -> tuple[np.ndarray, pd.DataFrame | None]:
    """Read ready nucleus crops.

    Parameters
    ----------
    path
        ``.npy`` holding an ``(n, H, W)`` array, or ``.h5ad`` with ``obsm["image"]``.

    Returns
    -------
    crops, obs
        The float32 crops and, for ``.h5ad``, the file's ``obs`` (``None`` for ``.npy``).
    """
    path = require_path(path, "crop file")
    suffix = path.suffix.lower()
    obs = None
    try:
        if suffix == ".npy":
            crops = np.load(path, allow_pickle=False)
        elif suffix == ".h5ad":
            adata = ad.read_h5ad(path)
            if "image" not in adata.obsm:
                raise InputError(path, 'AnnData has no obsm["image"] crops')
            crops, obs = np.asarray(adata.obsm["image"]), adata.obs.copy()
        else:
            raise InputError(path, "crops must be a .npy array or an .h5ad file")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"cannot read crops: {type(exc).__name__}: {exc}") from exc
    if crops.ndim == 4 and crops.shape[-1] == 1:
        crops = crops[..., 0]
    if crops.ndim != 3:
        raise InputError(path, f"crops must have shape (n, H, W), got {crops.shape}")
    if len(crops) == 0:
        raise InputError(path, "no crops in file")
    if not np.issubdtype(crops.dtype, np.number):
        raise InputError(path, f"crops have non-numeric dtype {crops.dtype}")
    return crops.astype(np.float32), obs


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


# --------------------------------------------------------------------------- annotations


def _read_annotation_table(annotations: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """Load an annotation table (TSV/CSV path or DataFrame) and check its position columns."""
    if isinstance(annotations, pd.DataFrame):
        table, where = annotations.copy(), None
    else:
        where = require_path(annotations, "annotation table")
        sep = "," if where.suffix.lower() == ".csv" else "\t"
        try:
            table = pd.read_csv(where, sep=sep)
        except Exception as exc:
            raise InputError(where, f"cannot read annotation table: {exc}") from exc
    missing = [c for c in NUCLEUS_POSITION if c not in table.columns]
    if missing:
        raise InputError(where, f"annotation table lacks column(s) {', '.join(missing)}")
    for col in ("centroid_y", "centroid_x"):
        numbers = pd.to_numeric(table[col], errors="coerce")
        bad = numbers.isna() & table[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                where, f"annotation column {col!r} must hold pixel coordinates; row {row + 1} holds {table[col].iloc[row]!r}"
            )
        table[col] = numbers
    if "split" in table.columns:
        # the same rule as for sequencing domains (finalize_domain): a 'Test' would
        # otherwise be trained on without a word; unannotated nuclei may stay empty
        check_split(table["split"].dropna(), path=where, what="annotation column 'split'")
    return table


def annotate_nuclei(
    obs: pd.DataFrame, annotations: str | os.PathLike | pd.DataFrame, *, max_distance: float = 5.0
) -> pd.DataFrame:
    """Annotation columns for each nucleus, taken from the nearest annotated nucleus.

    Parameters
    ----------
    obs
        Nuclei with ``source_file``, ``centroid_y``, ``centroid_x``.
    annotations
        TSV (or ``.csv``) path or DataFrame with those columns plus annotation
        columns (e.g. ``cell_type``, ``split``).
    max_distance
        Largest centroid distance of a match (pixels); unmatched nuclei get NaN.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``obs``, one column per annotation column. Columns whose
        names already exist in ``obs`` (e.g. ``label``) get the suffix ``_annotation``.
        Text columns become categorical, integer columns nullable integers (``Int64``,
        missing where a nucleus has no annotation).
    """
    table = _read_annotation_table(annotations)
    idx = match_nuclei(obs, table, max_distance=max_distance)
    unmatched = int((idx < 0).sum())
    where = annotations if not isinstance(annotations, pd.DataFrame) else "annotations"
    if unmatched and unmatched == len(obs):
        fields = sorted({Path(str(f)).name for f in obs["source_file"]})[:3]
        named = sorted({Path(str(f)).name for f in table["source_file"]})[:3]
        raise InputError(
            where,
            f"no annotation lies within {max_distance:g} px of any of the {len(obs)} nuclei; check that "
            f"source_file names the fields (fields: {', '.join(fields)}; table: {', '.join(named)}) and "
            "that centroid_y/centroid_x are not swapped",
        )
    if unmatched:
        logger.warning("%d of %d nuclei have no annotated nucleus within %.1f px", unmatched, len(obs), max_distance)
    columns = [c for c in table.columns if c not in NUCLEUS_POSITION]
    out = pd.DataFrame(index=obs.index)
    for col in columns:
        values = table[col].reset_index(drop=True).reindex(np.where(idx >= 0, idx, len(table))).to_numpy()
        name = f"{col}_annotation" if col in obs.columns else col
        out[name] = values
        if table[col].dtype == object or isinstance(table[col].dtype, pd.CategoricalDtype):
            out[name] = out[name].astype("category")
        elif pd.api.types.is_integer_dtype(table[col].dtype):
            # integers stay integers where a nucleus has no annotation (nullable, not float NaN)
            out[name] = pd.array(pd.to_numeric(out[name]), dtype="Int64")
    return out


# --------------------------------------------------------------------------- AnnData


def _features_matrix(crops: np.ndarray, index: pd.Index, *, mask_threshold: float, n_shells: int, glcm_levels: int) -> pd.DataFrame:
    """Crop morphology features with NaN/inf replaced so the matrix is usable for training."""
    feats = crop_features(crops, mask_threshold=mask_threshold, n_shells=n_shells, glcm_levels=glcm_levels, index=index)
    return feats.replace([np.inf, -np.inf], np.nan).fillna(0.0)


def _build_anndata(
    crops: np.ndarray,
    obs: pd.DataFrame,
    *,
    domain: str,
    params: dict[str, Any],
    source: str | os.PathLike | pd.DataFrame,
    native: pd.DataFrame | None,
    mask_threshold: float,
    n_shells: int,
    glcm_levels: int,
) -> ad.AnnData:
    """Assemble the image AnnData of the prepared-domain contract."""
    feats = _features_matrix(crops, obs.index, mask_threshold=mask_threshold, n_shells=n_shells, glcm_levels=glcm_levels)
    adata = ad.AnnData(
        X=feats.to_numpy(np.float32),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(feats.columns, name="feature")),
    )
    adata.obsm[IMAGE_KEY] = crops.astype(np.float32)
    if native is not None:
        adata.obsm["morphology_native"] = native.set_axis(adata.obs_names).astype(np.float64)
    if adata.obs_names.has_duplicates:
        adata.obs_names_make_unique()  # the caller has warned (same field name in several folders)
    if SPLIT_KEY in adata.obs:
        # nuclei the annotations did not reach are trained on, as every unmarked cell is
        adata.obs[SPLIT_KEY] = adata.obs[SPLIT_KEY].astype(object).where(adata.obs[SPLIT_KEY].notna(), "train")
    return finalize_domain(adata, domain=domain, modality="image", label_key=None, params=params, source=source)


def _prepare_from_crops(
    path: Path,
    *,
    crop_size: int,
    normalize: str,
    percentile: float,
) -> tuple[np.ndarray, pd.DataFrame, float]:
    """Resize and normalise ready crops; give them provenance columns."""
    crops, obs = read_crops(path)
    if crops.shape[1:] != (crop_size, crop_size):
        crops = _resize_stack(crops, crop_size)
    crops, scale = _normalise(crops, normalize=normalize, percentile=percentile)
    if obs is None:
        obs = pd.DataFrame(index=[f"{path.stem}_{i}" for i in range(len(crops))])
        obs["source_file"] = path.name
        obs["label"] = np.arange(len(crops))
    obs = obs.copy()
    obs.index = obs.index.astype(str)
    for col in ("centroid_y", "centroid_x", *_BBOX):
        if col not in obs.columns:
            obs[col] = np.nan
    if "source_file" not in obs.columns:
        obs["source_file"] = path.name
    if "label" not in obs.columns:
        obs["label"] = np.arange(len(obs))
    return crops, obs, scale


def prepare_image(
    source: str | os.PathLike,
    *,
    domain: str = "image",
    crop_size: int = 32,
    padding: float = 0.2,
    window: Literal["fixed", "bbox"] = "fixed",
    window_size: float | Literal["auto"] = "auto",
    orientation: Literal["align", "keep"] = "align",
    min_area: float = 30,
    max_area: float | None = None,
    exclude_border: bool = True,
    segmentation: Literal["auto", "watershed", "otsu", "masks"] = "auto",
    sigma: float = 1.0,
    threshold: ThresholdSpec = "li",
    background_sigma: float | Literal["auto"] | None = "auto",
    min_distance: int | Literal["auto"] = "auto",
    min_size: int = 16,
    min_snr: float = 3.0,
    channel: int | None = None,
    normalize: Literal["dataset", "crop", "none"] = "dataset",
    percentile: float = 99.5,
    mask_threshold: float = 0.02,
    n_shells: int = 5,
    glcm_levels: int = 16,
    annotations: str | os.PathLike | pd.DataFrame | None = None,
    annotation_max_distance: float = 5.0,
) -> ad.AnnData:
    """Segment, crop and measure nuclei into the image-domain AnnData.

    Parameters
    ----------
    source
        Folder, glob pattern or file of fields; or a ``.npy`` / ``.h5ad`` of ready crops.
    domain
        Domain name stored in ``obs["domain"]`` and ``uns``.
    crop_size
        Side ``S`` of the stored crops.
    padding
        Fractional margin added to the window side.
    window
        ``"fixed"`` (default; one physical window for all nuclei, keeps size) or
        ``"bbox"`` (tight window per nucleus). See the module notes.
    window_size
        Fixed window side in field pixels, or ``"auto"`` (95th percentile of the
        nuclei's longest bounding-box side times ``1 + padding``).
    orientation
        ``"align"`` (default): each nucleus rotated to a horizontal major axis and
        flipped to a canonical side (:func:`canonical_orientation`); ``"keep"``: as in
        the field. Ready-made crops are used as given.
    min_area, max_area
        Kept nuclei have ``min_area <= area <= max_area`` pixels (``max_area=None``: no upper limit).
    exclude_border
        Drop nuclei touching the field border (they are cut off).
    segmentation
        ``"auto"`` (user masks where present, watershed elsewhere), ``"watershed"``,
        ``"otsu"`` (plain global Otsu threshold and connected components, no
        background correction or splitting: a reference, adequate only for sparse
        fields) or ``"masks"`` (a mask must exist for every field).
    sigma, threshold, background_sigma, min_distance, min_size, min_snr
        Options of :func:`cellbridge.preprocess.segment.segment_nuclei`.
    channel
        Nuclear-stain channel of multi-channel images.
    normalize
        ``"dataset"`` (default), ``"crop"`` or ``"none"``; see the module notes.
    percentile
        Nucleus-intensity percentile mapped to 1 by ``normalize="dataset"``.
    mask_threshold, n_shells, glcm_levels
        Options of :func:`cellbridge.preprocess.morphology.crop_features`.
    annotations
        Optional TSV/CSV path or DataFrame (``source_file, centroid_y,
        centroid_x`` + annotation columns) joined by :func:`annotate_nuclei`.
    annotation_max_distance
        Largest centroid distance (pixels) of an annotation match.

    Returns
    -------
    anndata.AnnData
        ``obsm["image"]`` float32 ``(n, S, S)``; ``X`` float32 crop morphology
        features; ``obsm["morphology_native"]`` native-resolution shape and
        intensity features (fields only); ``obs`` provenance columns and ``domain``; ``uns["cellbridge"]``,
        with (fields only) ``uns["cellbridge"]["segmentation"]``: the number of fields, of
        segmented objects, of nuclei kept and of objects dropped per reason
        (``dropped_small``, ``dropped_large``, ``dropped_border``).
        ``uns["cellbridge"]["params"]`` also records the resolved
        ``window_px`` (fixed windows), ``pixel_scale`` (field pixels per crop
        pixel) and ``intensity_scale``.

    Raises
    ------
    InputError
        Missing or unreadable inputs, or no nucleus in any field.
    """
    if window not in ("fixed", "bbox"):
        raise ValueError(f"window must be 'fixed' or 'bbox', got {window!r}")
    if orientation not in ("align", "keep"):
        raise ValueError(f"orientation must be 'align' or 'keep', got {orientation!r}")
    if segmentation not in ("auto", "watershed", "otsu", "masks"):
        raise ValueError(f"segmentation must be 'auto', 'watershed', 'otsu' or 'masks', got {segmentation!r}")
    params: dict[str, Any] = {
        "crop_size": crop_size,
        "padding": padding,
        "window": window,
        "window_size": window_size,
        "orientation": orientation,
        "min_area": min_area,
        "max_area": max_area,
        "exclude_border": exclude_border,
        "segmentation": segmentation,
        "sigma": sigma,
        "threshold": threshold,
        "background_sigma": background_sigma,
        "min_distance": min_distance,
        "min_size": min_size,
        "min_snr": min_snr,
        "channel": channel,
        "normalize": normalize,
        "percentile": percentile,
        "mask_threshold": mask_threshold,
        "n_shells": n_shells,
        "glcm_levels": glcm_levels,
        "annotations": annotations,
        "annotation_max_distance": annotation_max_distance,
    }
    feature_opts = {"mask_threshold": mask_threshold, "n_shells": n_shells, "glcm_levels": glcm_levels}
    text = str(source)
    native = None
    segmentation_counts = None
    if not glob.has_magic(text) and Path(text).suffix.lower() in CROP_SUFFIXES:
        crops, obs, scale = _prepare_from_crops(
            Path(text), crop_size=crop_size, normalize=normalize, percentile=percentile
        )
        params["intensity_scale"] = scale
    else:
        segment_kwargs = {
            "sigma": sigma,
            "threshold": threshold,
            "background_sigma": background_sigma,
            "min_distance": min_distance,
            "min_size": min_size,
            "min_snr": min_snr,
        }
        fields, segmentation_counts = _segment_fields(
            find_image_files(source),
            source=source,
            channel=channel,
            segmentation=segmentation,
            segment_kwargs=segment_kwargs,
            min_area=min_area,
            max_area=max_area,
            exclude_border=exclude_border,
        )
        crops, obs, native, resolved = _crop_fields(
            fields,
            crop_size=crop_size,
            window=window,
            window_size=window_size,
            padding=padding,
            orientation=orientation,
            normalize=normalize,
            percentile=percentile,
        )
        params.update(resolved)

    if annotations is not None:
        if obs[["centroid_y", "centroid_x"]].isna().all().all():
            raise InputError(
                annotations if not isinstance(annotations, pd.DataFrame) else None,
                f"annotations are matched by position, but the crops in {text} carry no centroids",
            )
        obs = obs.join(annotate_nuclei(obs, annotations, max_distance=annotation_max_distance))
    if obs.index.has_duplicates:
        warnings.warn(f"{text}: duplicate nucleus names (same field name in several folders); made unique", stacklevel=2)
    adata = _build_anndata(crops, obs, domain=domain, params=params, source=source, native=native, **feature_opts)
    if segmentation_counts is not None:
        adata.uns["cellbridge"]["segmentation"] = segmentation_counts
    logger.info("prepared %d nuclei from %s", adata.n_obs, text)
    return adata


def _segment_fields(
    files: list[Path],
    *,
    source: str | os.PathLike,
    channel: int | None,
    segmentation: str,
    segment_kwargs: dict[str, Any],
    min_area: float,
    max_area: float | None,
    exclude_border: bool,
) -> tuple[list[_Field], dict[str, int]]:
    """Read, segment and filter every field; warn for fields without a kept nucleus.

    Also returns the counts of segmented objects kept and dropped per reason (``small``,
    ``large``, ``border``), stored as ``uns["cellbridge"]["segmentation"]``."""
    fields: list[_Field] = []
    dropped = {"small": 0, "large": 0, "border": 0}
    methods: dict[str, int] = {}
    n_kept = 0
    for path in files:
        image = read_field(path, channel=channel)
        labels, method = _segment_field(path, image, segmentation=segmentation, segment_kwargs=segment_kwargs)
        methods[method] = methods.get(method, 0) + 1
        table, counts = _filter_objects(
            _object_table(labels), image.shape, min_area=min_area, max_area=max_area, exclude_border=exclude_border
        )
        for key, value in counts.items():
            dropped[key] += value
        n_kept += len(table)
        if table.empty:
            warnings.warn(f"{path}: no nucleus kept in this field (segmentation: {method})", stacklevel=3)
            continue
        values = (image - np.float32(field_background(image, labels))).astype(np.float32)
        fields.append(_Field(path=path, values=values, labels=labels, table=table))
    logger.info(
        "segmented %d fields (%s); dropped %d small, %d large, %d border-touching objects",
        len(files),
        ", ".join(f"{k}: {v}" for k, v in sorted(methods.items())),
        dropped["small"],
        dropped["large"],
        dropped["border"],
    )
    if not fields:
        shown = ", ".join(p.name for p in files[:5]) + (", ..." if len(files) > 5 else "")
        raise InputError(source, f"no nucleus found in any of {len(files)} field(s): {shown}")
    stats = {
        "n_fields": len(files),
        "n_fields_without_nuclei": len(files) - len(fields),
        "n_objects": n_kept + sum(dropped.values()),
        "kept": n_kept,
        **{f"dropped_{reason}": n for reason, n in dropped.items()},
    }
    return fields, stats


def _crop_fields(
    fields: list[_Field],
    *,
    crop_size: int,
    window: str,
    window_size: float | str,
    padding: float,
    orientation: str,
    normalize: str,
    percentile: float,
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Crops, obs and native features of all kept nuclei, plus the resolved window and scale."""
    sides = _window_sides([f.table for f in fields], window=window, window_size=window_size, padding=padding)
    crops_list, obs_list, native_list = [], [], []
    truncated = 0
    start = 0
    for field in fields:
        n = len(field.table)
        crops, cut = extract_crops(
            field.values,
            field.labels,
            field.table,
            window=sides[start : start + n],
            crop_size=crop_size,
            orientation=orientation,
        )
        start += n
        truncated += cut
        obs = field.table.drop(columns="area").copy()
        obs.insert(0, "source_file", field.path.name)
        obs.index = [f"{field.path.stem}_{lab}" for lab in obs["label"]]
        native = field_features(
            field.labels, field.values, ids=field.table["label"].to_numpy(), groups=NATIVE_GROUPS
        )
        native.index = obs.index
        crops_list.append(crops)
        obs_list.append(obs)
        native_list.append(native)
    if truncated:
        logger.info("%d nuclei were larger than their %s window and are truncated in the crops", truncated, window)
    crops, scale = _normalise(np.concatenate(crops_list), normalize=normalize, percentile=percentile)
    obs = pd.concat(obs_list)
    for col in ("label", *_BBOX):
        obs[col] = obs[col].astype(np.int64)
    resolved: dict[str, Any] = {"intensity_scale": scale, "n_truncated": truncated}
    if window == "fixed":
        resolved["window_px"] = float(sides[0])
        resolved["pixel_scale"] = float(np.ceil(sides[0])) / crop_size
    return crops, obs, pd.concat(native_list), resolved


# --------------------------------------------------------------------------- plots


def _param(key: str, value: Any) -> Any:
    """A stored preprocessing parameter back as given (files written before 2026-12 held ``None`` as ``"none"``)."""
    return None if value == "none" and key != "normalize" else value


def _qc_field(adata: ad.AnnData) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, str] | None:
    """The field with most kept nuclei, segmented again with the stored parameters:
    (image, label image, objects with a ``fate`` column, file name); None for ready crops."""
    meta = adata.uns.get("cellbridge", {})
    params = {k: _param(k, v) for k, v in meta.get("params", {}).items()}
    if "segmentation" not in meta or "source_file" not in adata.obs:
        return None
    name = str(adata.obs["source_file"].value_counts().index[0])
    path = next((f for f in find_image_files(meta["source"]) if f.name == name), None)
    if path is None:
        return None
    image = read_field(path, channel=params.get("channel"))
    keys = ("sigma", "threshold", "background_sigma", "min_distance", "min_size", "min_snr")
    labels, _ = _segment_field(
        path, image, segmentation=params.get("segmentation", "auto"), segment_kwargs={k: params[k] for k in keys if k in params}
    )
    table = _object_table(labels)
    kept, _ = _filter_objects(
        table, image.shape, min_area=params.get("min_area", 0), max_area=params.get("max_area"),
        exclude_border=bool(params.get("exclude_border", True)),
    )
    area = table["area"].to_numpy()
    fate = np.where(area < params.get("min_area", 0), "small", "border")
    if params.get("max_area") is not None:
        fate = np.where(area > params["max_area"], "large", fate)
    table["fate"] = np.where(table["label"].isin(kept["label"]), "kept", fate)
    return image, labels, table, name


#: Colours of the segmentation outlines and count bars in the image QC figure.
_FATE_COLOURS = {"kept": "#1a9850", "small": "#d73027", "large": "#fdae61", "border": "#4575b4"}


def plot_image_qc(adata: ad.AnnData, path: str | os.PathLike, *, n: int = 36, seed: int = 0) -> Path:
    """Write the QC figure of an image domain: segmentation, filters and crops.

    Panels: one field (the one with most kept nuclei, segmented again with the stored
    parameters) with every object's outline coloured by what happened to it (kept, too
    small, too large, touching the border); the counts of kept and dropped objects per
    reason over all fields (``uns["cellbridge"]["segmentation"]``); the distribution of the
    kept nuclei's area; a contact sheet of ``n`` randomly chosen crops as the autoencoder
    sees them. Ready-made crops (no fields) get the contact sheet only.

    Parameters
    ----------
    adata
        Prepared image AnnData (``obsm["image"]`` of shape ``(n, S, S)``).
    path
        Destination PNG (written atomically).
    n
        Number of crops in the contact sheet (at most ``adata.n_obs``).
    seed
        Seed of the choice of crops.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    # A bare Figure (no pyplot) leaves the user's backend and open figures alone.
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from skimage.segmentation import find_boundaries

    if "image" not in adata.obsm:
        raise ValueError('adata has no obsm["image"] crops')
    images = np.asarray(adata.obsm["image"])
    k = min(n, len(images))
    if k == 0:
        raise ValueError("adata has no crops to show")
    meta = adata.uns.get("cellbridge", {})
    domain = meta.get("domain", "image")
    field = _qc_field(adata)
    counts = meta.get("segmentation")
    fig = Figure(figsize=(15.5, 5.4) if field is not None else (5.6, 5.6))
    grid = fig.add_gridspec(2, 3, width_ratios=[1.25, 0.8, 1.0]) if field is not None else fig.add_gridspec(1, 1)

    if field is not None:
        image, labels, table, name = field
        ax = fig.add_subplot(grid[:, 0])
        lo, hi = np.percentile(image, [1, 99.8])
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        overlay = np.zeros((*labels.shape, 4))
        edges = find_boundaries(labels, mode="inner")
        fate_of = dict(zip(table["label"], table["fate"], strict=True))
        from matplotlib.colors import to_rgba

        for label in np.unique(labels[edges]):
            if label:
                overlay[edges & (labels == label)] = to_rgba(_FATE_COLOURS[fate_of[label]])
        ax.imshow(overlay, interpolation="nearest")
        ax.set_xlabel("x (field pixels)", fontsize=9)
        ax.set_ylabel("y (field pixels)", fontsize=9)
        ax.tick_params(labelsize=8)
        here = table["fate"].value_counts()
        ax.set_title(f"field {name}: {len(table)} objects, {here.get('kept', 0)} kept", fontsize=10)
        ax.legend(
            handles=[Patch(color=c, label=f"{f} ({here.get(f, 0)})") for f, c in _FATE_COLOURS.items()],
            loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=4, fontsize=8.5, frameon=False,
        )
        bars = fig.add_subplot(grid[0, 1])
        if counts:
            reasons = ["kept", "small", "large", "border"]
            values = [counts["kept"], counts["dropped_small"], counts["dropped_large"], counts["dropped_border"]]
            ypos = np.arange(len(reasons))[::-1]
            bars.barh(ypos, values, color=[_FATE_COLOURS[r] for r in reasons])
            bars.set_yticks(ypos)
            bars.set_yticklabels(["kept", "dropped: too small", "dropped: too large", "dropped: at border"], fontsize=8.5)
            for y, v in zip(ypos, values, strict=True):
                bars.annotate(f"{v}", (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8.5)
            bars.set_xlim(0, max(values) * 1.2 or 1)
            bars.set_xlabel("segmented objects (all fields)", fontsize=9)
            bars.set_title(f"{counts['n_objects']} objects in {counts['n_fields']} fields", fontsize=10)
            bars.tick_params(axis="x", labelsize=8)
        hist = fig.add_subplot(grid[1, 1])
        native = adata.obsm.get("morphology_native")
        if native is not None and "area" in native:
            hist.hist(np.asarray(native["area"], dtype=float), bins=30, color=_FATE_COLOURS["kept"], alpha=0.8)
            min_area = meta.get("params", {}).get("min_area")
            if isinstance(min_area, (int, float, np.integer, np.floating)):
                hist.axvline(float(min_area), color=_FATE_COLOURS["small"], linestyle="--", label=f"min_area = {min_area:g}")
                hist.legend(fontsize=8, frameon=False)
        hist.set_xlabel("nucleus area (field pixels), kept nuclei", fontsize=9)
        hist.set_ylabel("nuclei", fontsize=9)
        hist.tick_params(labelsize=8)
        sheet_ax = fig.add_subplot(grid[:, 2])
    else:
        sheet_ax = fig.add_subplot(grid[0, 0])

    chosen = np.sort(np.random.default_rng(seed).choice(len(images), size=k, replace=False))
    cols = int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    s = images.shape[1]
    # One mosaic image with 1-pixel gaps is much faster to draw than k axes.
    mosaic = np.full((rows * (s + 1) - 1, cols * (s + 1) - 1), np.nan, dtype=np.float32)
    for j, idx in enumerate(chosen):
        r, c = divmod(j, cols)
        mosaic[r * (s + 1) : r * (s + 1) + s, c * (s + 1) : c * (s + 1) + s] = images[idx]
    vmax = float(np.nanpercentile(mosaic, 99.9)) or 1.0
    cmap = colormaps["gray"].with_extremes(bad="#3b3b8f")
    sheet_ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    sheet_ax.set_axis_off()
    sheet_ax.set_title(f"{k} of {adata.n_obs} crops ({s} x {s} px, as the model sees them)", fontsize=10)
    fig.suptitle(f"{domain}: segmentation and crops", fontsize=11.5)
    fig.tight_layout()
    return save_figure(fig, path)
