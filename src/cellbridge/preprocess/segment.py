"""Nucleus segmentation of fluorescence fields and label-matching scores.

The segmenter is a classical, parameter-light pipeline that adapts to the nucleus
size it finds in each field, so the same defaults work for small simulated nuclei
and for real images at another magnification:

1. **Size estimate.** A first global threshold on the lightly smoothed field gives
   foreground blobs; the median over blobs of the largest inscribed-disc radius
   (maximum of the Euclidean distance transform) estimates the radius ``r`` of one
   nucleus. The maximum of the distance transform is used rather than blob areas
   because clusters of touching nuclei still peak at about one nucleus radius,
   whereas their area would inflate the estimate.
2. **Local background.** A Gaussian of width ``2 r`` estimates the local background
   (illumination, out-of-focus haze and the glow of dense clusters) and is
   subtracted. This makes the following global threshold act like a local one, so
   nuclei in dim regions are kept and bright clusters are not merged through
   their halo.
3. **Threshold and clean-up.** Gaussian smoothing (``sigma``), threshold (Li's
   minimum cross-entropy by default: it sits lower than Otsu's on fields where a
   few very bright nuclei dominate, so moderately dim nuclei are kept), hole
   filling, removal of specks smaller than ``min_size``, and removal of blobs
   whose mean is less than ``min_snr`` noise standard deviations above the
   background (noise estimated from neighbouring-pixel differences), so a field
   of pure noise yields no nucleus. Nuclei dimmer than a few per cent of the
   brightest ones in the same field can still be missed; pass a numeric
   ``threshold`` for such data.
4. **Seeded watershed.** Seeds are the local maxima of the distance transform
   (smoothed at ``r / 4`` so that ragged borders do not create spurious peaks),
   at least ``min_distance`` apart (default ``r / 2``). The watershed of the
   negated distance map inside the foreground splits touching nuclei along
   their necks.

:func:`match_labels` scores a segmentation against a reference with a one-to-one
(Hungarian) matching on intersection-over-union.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from skimage import feature, filters, segmentation


ThresholdSpec = Literal["otsu", "li"] | float

__all__ = [
    "estimate_nucleus_radius",
    "field_background",
    "fill_holes",
    "pixel_noise",
    "match_labels",
    "segment_nuclei",
]


def _threshold_value(image: np.ndarray, threshold: ThresholdSpec) -> float:
    """Resolve a threshold name (``"otsu"``, ``"li"``) or number to a value for ``image``.

    Named thresholds are computed on every second pixel of large (smoothed)
    fields: the intensity histogram is the same and Li's iterations cost a quarter.
    """
    if isinstance(threshold, str):
        sample = image[::2, ::2] if image.ndim == 2 and image.size > 2**14 else image
        if threshold == "otsu":
            return float(filters.threshold_otsu(sample))
        if threshold == "li":
            return float(filters.threshold_li(sample))
        raise ValueError(f"threshold must be 'otsu', 'li' or a number, got {threshold!r}")
    return float(threshold)


def _is_flat(image: np.ndarray) -> bool:
    """True when the field has no contrast at all (thresholding is undefined)."""
    return bool(np.ptp(image) <= np.finfo(np.float32).eps * max(1.0, float(np.abs(image).max())))


def _smooth_background(image: np.ndarray, sigma: float) -> np.ndarray:
    """Wide Gaussian background estimate, computed on a subsampled grid for speed.

    The estimate varies on the scale of ``sigma``, so filtering a copy subsampled
    by about ``sigma / 4`` and interpolating back loses nothing visible while
    cutting the cost of a wide kernel by the square of the subsampling factor.
    """
    step = max(1, int(sigma // 4))
    if step == 1:
        return ndi.gaussian_filter(image, sigma)
    small = ndi.uniform_filter(image, size=step)[step // 2 :: step, step // 2 :: step]
    small = ndi.gaussian_filter(small, sigma / step, mode="nearest")
    zoom = (image.shape[0] / small.shape[0], image.shape[1] / small.shape[1])
    big = ndi.zoom(small, zoom, order=1, mode="nearest", grid_mode=True)
    return big[: image.shape[0], : image.shape[1]]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions of a 2D mask that do not touch the image border.

    Equivalent to :func:`scipy.ndimage.binary_fill_holes` with 4-connected
    background, but one labelling pass instead of an iterated dilation (several
    times faster on whole fields).
    """
    background, _ = ndi.label(~mask)
    outside = np.zeros(background.max() + 1, dtype=bool)
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        outside[edge] = True
    outside[0] = True  # label 0 is the mask itself
    return mask | ~outside[background]


def pixel_noise(image: np.ndarray) -> float:
    """Robust standard deviation of the pixel noise of a field.

    Uses the median absolute deviation of differences between horizontal
    neighbours, which cancels smooth structure (nuclei, illumination) and is
    barely affected by the few pixels on object edges.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.shape[1] < 2:
        return 0.0
    # Every other row is plenty for a median and halves the cost.
    step = 2 if img.shape[0] >= 64 else 1
    d = np.diff(img[::step], axis=1).ravel() / np.sqrt(2.0)
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


def _clean(fg: np.ndarray, min_size: int) -> np.ndarray:
    """Fill holes and drop specks smaller than ``min_size`` pixels."""
    fg = fill_holes(fg)
    comps, n = ndi.label(fg)
    if n:
        sizes = np.bincount(comps.ravel())
        small = sizes < min_size
        small[0] = True
        fg = ~small[comps]
    return fg


def _significant(fg: np.ndarray, smoothed: np.ndarray, *, noise: float, min_snr: float) -> np.ndarray:
    """Keep blobs whose mean intensity exceeds the background by ``min_snr`` noise units.

    Thresholding always returns *something*, even on a field of pure noise; this
    test rejects the blobs that noise alone would produce.
    """
    comps, n = ndi.label(fg)
    if n == 0 or min_snr <= 0:
        return fg
    outside = ~ndi.maximum_filter(fg, size=5)
    level = float(np.median(smoothed[outside])) if outside.any() else float(np.percentile(smoothed, 5))
    means = ndi.mean(smoothed, comps, np.arange(1, n + 1))
    keep = np.r_[False, means - level >= min_snr * max(noise, 1e-12)]
    return keep[comps]


def _foreground(
    smoothed: np.ndarray, *, threshold: ThresholdSpec, min_size: int, noise: float = 0.0, min_snr: float = 0.0
) -> np.ndarray:
    """Threshold, clean up, and drop blobs that are not significantly brighter than background."""
    fg = _clean(smoothed > _threshold_value(smoothed, threshold), min_size)
    return _significant(fg, smoothed, noise=noise, min_snr=min_snr)


def _smoothed_noise(noise: float, sigma: float) -> float:
    """Noise standard deviation after a Gaussian of width ``sigma`` (white-noise model)."""
    return noise / (2.0 * np.sqrt(np.pi) * sigma) if sigma > 0.5 else noise


def estimate_nucleus_radius(
    image: np.ndarray,
    *,
    sigma: float = 1.0,
    threshold: ThresholdSpec = "li",
    min_size: int = 16,
    min_snr: float = 3.0,
) -> float:
    """Estimate the typical nucleus radius (pixels) of a field.

    Parameters
    ----------
    image
        2D fluorescence field.
    sigma
        Gaussian smoothing before thresholding.
    threshold
        ``"li"`` (default), ``"otsu"`` or an intensity value.
    min_size
        Blobs smaller than this (pixels) are ignored.
    min_snr
        Blobs whose mean exceeds the background by less than this many noise
        standard deviations are ignored.

    Returns
    -------
    float
        Median over foreground blobs of their largest inscribed-disc radius, or
        ``nan`` when the field has no foreground.
    """
    img = np.asarray(image, dtype=np.float32)
    if _is_flat(img):
        return float("nan")
    smoothed = ndi.gaussian_filter(img, sigma) if sigma > 0 else img
    noise = _smoothed_noise(pixel_noise(img), sigma)
    fg = _foreground(smoothed, threshold=threshold, min_size=min_size, noise=noise, min_snr=min_snr)
    return _radius_of_blobs(fg)


def _component_boxes(comps: np.ndarray, pad: int) -> list[tuple[int, tuple[slice, slice]]]:
    """Label and padded bounding box (clipped to the field) of every component."""
    boxes = []
    for index, sl in enumerate(ndi.find_objects(comps)):
        if sl is not None:
            box = tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(sl, comps.shape, strict=True))
            boxes.append((index + 1, box))
    return boxes


def _radius_of_blobs(fg: np.ndarray) -> float:
    """Median over blobs of the largest inscribed-disc radius (``nan`` without blobs).

    Distances are computed per blob inside its padded bounding box: fields are
    mostly background, so this costs far less than a whole-field transform.
    """
    comps, n = ndi.label(fg)
    if n == 0:
        return float("nan")
    peaks = [ndi.distance_transform_edt(comps[box] == k).max() for k, box in _component_boxes(comps, 1)]
    return float(np.median(peaks))


def _watershed_split(fg: np.ndarray, *, radius: float, min_distance: int | None) -> np.ndarray:
    """Split touching nuclei in a binary mask by a distance-transform seeded watershed.

    Each connected blob is processed inside its own padded bounding box, so the
    cost follows the foreground area rather than the field size, and blobs with
    a single seed skip the watershed altogether.
    """
    comps, _ = ndi.label(fg)
    out = np.zeros(fg.shape, dtype=np.int32)
    # Smoothing the distance map at a quarter radius merges the many shallow
    # ridges a ragged border produces, leaving one peak per roundish nucleus.
    width = max(0.5, radius / 4.0)
    md = min_distance if min_distance is not None else max(2, int(round(radius / 2.0)))
    pad = int(np.ceil(3 * width)) + 1
    next_label = 1
    for k, box in _component_boxes(comps, pad):
        blob = comps[box] == k
        smooth = ndi.gaussian_filter(ndi.distance_transform_edt(blob), width, mode="constant")
        coords = feature.peak_local_max(smooth, min_distance=md, threshold_abs=0.5, exclude_border=False)
        coords = coords[blob[tuple(coords.T)]]
        view = out[box]
        if len(coords) <= 1:  # also a flat plateau without a peak: one nucleus
            view[blob] = next_label
            next_label += 1
            continue
        markers = np.zeros(blob.shape, dtype=np.int32)
        markers[tuple(coords.T)] = np.arange(1, len(coords) + 1)
        split = segmentation.watershed(-smooth, markers, mask=blob)
        view[blob] = split[blob] + next_label - 1
        next_label += len(coords)
    return out


def segment_nuclei(
    image: np.ndarray,
    *,
    method: Literal["watershed", "threshold"] = "watershed",
    sigma: float = 1.0,
    threshold: ThresholdSpec = "li",
    background_sigma: float | Literal["auto"] | None = "auto",
    min_distance: int | Literal["auto"] = "auto",
    min_size: int = 16,
    min_snr: float = 3.0,
) -> np.ndarray:
    """Segment nuclei in a 2D fluorescence field.

    Parameters
    ----------
    image
        2D array (any numeric dtype), bright nuclei on a dark background.
    method
        ``"watershed"`` (default) splits touching nuclei with a distance-transform
        seeded watershed; ``"threshold"`` returns the connected components of
        the thresholded mask without splitting (a reference, and adequate for sparse
        fields).
    sigma
        Width (pixels) of the Gaussian smoothing applied before thresholding.
    threshold
        ``"li"`` (default), ``"otsu"`` or a number. A number is compared with
        the smoothed, background-corrected intensity (input units minus the
        local background).
    background_sigma
        Width (pixels) of the Gaussian local-background estimate subtracted before
        thresholding; ``"auto"`` (default) uses twice the estimated nucleus radius
        (see :func:`estimate_nucleus_radius`); ``None`` disables the correction.
    min_distance
        Minimum distance (pixels) between watershed seeds; ``"auto"`` (default)
        uses half the estimated nucleus radius.
    min_size
        Foreground blobs smaller than this many pixels are discarded.
    min_snr
        Blobs whose mean smoothed intensity exceeds the background by less than
        this many noise standard deviations (estimated from neighbouring-pixel
        differences) are discarded, so empty fields stay empty; 0 disables the test.

    Returns
    -------
    numpy.ndarray
        ``int32`` label image of the same shape, background 0, labels ``1..n``.

    Notes
    -----
    On the 2018 Data Science Bowl image shipped with stardist (125 nuclei) the
    defaults reach F1 of about 0.88 at IoU 0.5, against about 0.52 for plain
    Otsu thresholding (``method="threshold", threshold="otsu",
    background_sigma=None``); see
    ``benchmarks/segmentation.py``.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"segment_nuclei expects a 2D image, got shape {img.shape}")
    if method not in ("watershed", "threshold"):
        raise ValueError(f"method must be 'watershed' or 'threshold', got {method!r}")
    if _is_flat(img):
        return np.zeros(img.shape, dtype=np.int32)

    # Smoothing is linear, so the smoothed raw field serves both the size
    # estimate and (minus the smooth background) the final threshold.
    smoothed = ndi.gaussian_filter(img, sigma) if sigma > 0 else img
    fg_opts = {
        "threshold": threshold,
        "min_size": min_size,
        "noise": _smoothed_noise(pixel_noise(img), sigma),
        "min_snr": min_snr,
    }
    fg = _foreground(smoothed, **fg_opts)
    radius = _radius_of_blobs(fg)
    if not np.isfinite(radius):
        return np.zeros(img.shape, dtype=np.int32)

    if background_sigma is not None:
        width = 2.0 * radius if background_sigma == "auto" else float(background_sigma)
        corrected = smoothed - _smooth_background(img, width)
        if _is_flat(corrected):
            return np.zeros(img.shape, dtype=np.int32)
        fg = _foreground(corrected, **fg_opts)

    if method == "threshold":
        labels, _ = ndi.label(fg)
        return labels.astype(np.int32)
    md = None if min_distance == "auto" else int(min_distance)
    return _watershed_split(fg, radius=radius, min_distance=md)


def field_background(image: np.ndarray, labels: np.ndarray, *, margin: int = 2) -> float:
    """Estimate a field's background intensity.

    Parameters
    ----------
    image
        2D field.
    labels
        Label image of every detected object (including ones later discarded),
        so that no nucleus pixel leaks into the estimate.
    margin
        Objects are dilated by this many pixels first, to exclude their blurred rims.

    Returns
    -------
    float
        Median intensity of the pixels outside every (dilated) object; the
        field's 5th percentile when objects cover the whole field.
    """
    fg = np.asarray(labels) > 0
    if margin > 0 and fg.any():
        fg = ndi.maximum_filter(fg, size=2 * margin + 1)
    outside = np.asarray(image)[~fg]
    if outside.size == 0:
        return float(np.percentile(image, 5))
    return float(np.median(outside))


def _pair_overlaps(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU matrix between the objects of two label images, with their label ids."""
    p = np.asarray(pred).ravel().astype(np.int64)
    t = np.asarray(truth).ravel().astype(np.int64)
    p_ids, p_inv = np.unique(p, return_inverse=True)
    t_ids, t_inv = np.unique(t, return_inverse=True)
    # Index 0 of each id list is background when present; shift so that objects start at 1.
    p_off = 1 if p_ids[0] == 0 else 0
    t_off = 1 if t_ids[0] == 0 else 0
    pi = p_inv + (1 - p_off)
    ti = t_inv + (1 - t_off)
    n_p, n_t = len(p_ids) - p_off, len(t_ids) - t_off
    inter = np.bincount(pi * (n_t + 1) + ti, minlength=(n_p + 1) * (n_t + 1)).reshape(n_p + 1, n_t + 1)
    area_p = inter.sum(axis=1)[1:]
    area_t = inter.sum(axis=0)[1:]
    overlap = inter[1:, 1:].astype(np.float64)
    union = area_p[:, None] + area_t[None, :] - overlap
    iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    return iou, p_ids[p_off:], t_ids[t_off:]


def match_labels(pred: np.ndarray, truth: np.ndarray, *, iou: float = 0.5) -> dict[str, float]:
    """Score a predicted label image against a reference one.

    Objects are paired one-to-one by maximising the total IoU (Hungarian
    algorithm); a pair counts as a true positive when its IoU is at least ``iou``.

    Parameters
    ----------
    pred, truth
        Integer label images of the same shape (0 is background; ids need not be
        consecutive).
    iou
        Minimum intersection-over-union of a match.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn`` (ints), ``precision``, ``recall``, ``f1`` and
        ``mean_iou`` (mean IoU of the true-positive pairs; ``nan`` when none).
        With no objects in either image precision, recall and F1 are 1.
    """
    if np.shape(pred) != np.shape(truth):
        raise ValueError(f"label images differ in shape: {np.shape(pred)} vs {np.shape(truth)}")
    ious, p_ids, t_ids = _pair_overlaps(pred, truth)
    n_p, n_t = len(p_ids), len(t_ids)
    if n_p and n_t:
        rows, cols = linear_sum_assignment(ious, maximize=True)
        matched = ious[rows, cols]
        matched = matched[matched >= iou]
    else:
        matched = np.zeros(0)
    tp = int(matched.size)
    fp, fn = n_p - tp, n_t - tp
    precision = tp / n_p if n_p else 1.0 if n_t == 0 else 0.0
    recall = tp / n_t if n_t else 1.0 if n_p == 0 else 0.0
    f1 = 2 * tp / (n_p + n_t) if (n_p + n_t) else 1.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "mean_iou": float(matched.mean()) if tp else float("nan"),
    }
