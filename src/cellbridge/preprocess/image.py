"""Nucleus images: read fields, segment, crop, measure and build the image AnnData.

The readers live in :mod:`~cellbridge.preprocess.fields`, the segmentation and cropping
passes in :mod:`~cellbridge.preprocess.crops`; this module holds :func:`prepare_image`,
the annotations of nuclei, the AnnData it builds and its QC sheet, and describes the rules.

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
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd

from .._io import InputError, require_path, save_figure
from ..contract import IMAGE_KEY, NUCLEUS_POSITION, SPLIT_KEY, check_split, finalize_domain
from ..truth import match_nuclei
from .crops import (
    _BBOX,
    _Field,
    _filter_objects,
    _normalise,
    _object_table,
    _resize_stack,
    _segment_field,
    _window_sides,
    extract_crops,
)
from .fields import CROP_SUFFIXES, find_image_files, find_mask_file, read_crops, read_field, read_label_mask
from .morphology import crop_features, field_features
from .segment import ThresholdSpec, field_background


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

# Native-resolution features kept beside the crop features: size and brightness
# in microscope units (chromatin layout and texture are measured on the crops).
NATIVE_GROUPS = ("shape", "intensity")


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
