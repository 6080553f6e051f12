"""Reading microscopy fields, label masks and ready crops (TIFF, PNG/JPEG, ``.npy``, ``.h5ad``).

Which files are fields and which are masks, and how stacks and channels become one 2D
nuclear image, are described in :mod:`cellbridge.preprocess.image`.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .._io import InputError, require_path

logger = logging.getLogger("cellbridge")


IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
MASK_STEM_SUFFIXES = ("_mask", "_masks", "_labels")
MASK_FOLDER = "masks"
CROP_SUFFIXES = (".npy", ".h5ad")


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
