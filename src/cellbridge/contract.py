"""The prepared-domain contract: what every stage agrees a prepared domain is.

A prepared domain is an AnnData (``docs/design.md``): cells in ``obs`` with the
domain's name in ``obs["domain"]``, held-out cells marked ``"test"`` in
``obs["split"]``, features in ``X`` (and raw counts in ``layers["counts"]`` for
count modalities), nucleus crops in ``obsm["image"]`` for images, and
``uns["cellbridge"]`` recording the modality, the preprocessing parameters, the
source file and the package version. Trained latents go to ``obsm["X_cellbridge"]``.

This module is the one home of those names, of stamping a prepared domain
(:func:`finalize_domain`), of checking one (:func:`validate_domain`), of turning
parameter values into ones JSON and h5ad can hold (:func:`jsonable`) and of the
package version (:func:`package_version`). It imports nothing of cellbridge but
:mod:`cellbridge._io` and the modality registry (:mod:`cellbridge.modalities`), so every
layer may import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._io import BLOCK_ENTRIES, InputError, OnDiskCSR, as_rows
from .modalities import COUNT_MODALITIES, MODALITIES  # noqa: F401  (names of the contract)

# the modalities a prepared domain may have, and those prepared from raw counts, are the
# registry's (cellbridge.modalities); named here too as part of the contract
#: ``uns`` key of the contract's metadata (modality, params, source, version)
UNS_KEY = "cellbridge"
#: obs column with the domain's name
DOMAIN_KEY = "domain"
#: obs column marking held-out cells; cells with value ``"test"`` are never trained on
SPLIT_KEY = "split"
SPLIT_VALUES = frozenset({"train", "test"})
#: obsm key of an image domain's nucleus crops, ``(n_cells, S, S)``
IMAGE_KEY = "image"
#: obsm key of the latent written by training (:meth:`cellbridge.CrossModalModel.get_latent`)
LATENT_KEY = "X_cellbridge"
#: obs columns that place a nucleus: its field image and centroid (pixels). Segmentation
#: assigns its own labels, so nuclei are matched to annotations and truth by these.
NUCLEUS_POSITION = ("source_file", "centroid_y", "centroid_x")
#: smallest crop side; sides are powers of two (each convolution stage halves the side)
MIN_CROP_SIDE = 8


def package_version() -> str:
    """The installed cellbridge version (``"0+unknown"`` when run from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cellbridge")
    except PackageNotFoundError:
        return "0+unknown"


def jsonable(value: Any) -> Any:
    """``value`` as plain types that both JSON and h5ad ``uns`` hold.

    Mappings become dicts with string keys, tuples lists, paths strings, numpy
    scalars and arrays Python numbers and lists; a pandas table (a parameter given
    as data, e.g. annotations) is recorded by its size, not copied. ``None`` stays.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (pd.DataFrame, pd.Series)):
        return f"{type(value).__name__}({len(value)} rows)"
    return value


def check_crop_side(side: int) -> int:
    """``side`` if it is a usable crop side (a power of two of at least :data:`MIN_CROP_SIDE`).

    Raises
    ------
    ValueError
        Otherwise.
    """
    size = int(side)
    if size < MIN_CROP_SIDE or size & (size - 1):
        raise ValueError(f"image crops must be square with a power-of-two side >= {MIN_CROP_SIDE}, got {side}")
    return size


# ------------------------------------------------------------------------------- labels
def check_labels(values: pd.Series, *, path: Any, what: str) -> None:
    """Refuse a label column in which every value is missing (naming ``path`` and ``what``)."""
    if len(values) and values.isna().all():
        raise InputError(path, f"{what} holds no labels (every value is missing)")


def as_label_categories(values: pd.Series) -> pd.Categorical:
    """Labels as string categories (missing values kept missing)."""
    # string categories keep h5ad round trips and label matching across domains exact
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.dropna(), 1) == 0):
        values = values.astype("Int64")  # 1.0 -> "1", as a table with missing labels reads it
    as_str = values.astype("string").astype(object).where(values.notna(), None)
    return pd.Categorical(as_str)


def check_split(values: pd.Series, *, path: Any, what: str = f"obs[{SPLIT_KEY!r}]") -> None:
    """Refuse split values other than ``"train"``/``"test"``: a typo would silently train on every cell."""
    values = values.astype(object)
    unknown = sorted(set(values.dropna().astype(str)) - SPLIT_VALUES)
    if unknown or values.isna().any():
        raise InputError(path, f"{what} must hold only 'train' or 'test' (found {unknown or 'missing values'})")


# ----------------------------------------------------------------------------- finalise
def finalize_domain(
    adata: Any,
    *,
    domain: str,
    modality: str,
    label_key: str | None,
    params: Mapping[str, Any],
    source: str | os.PathLike | None,
    qc: pd.DataFrame | None = None,
) -> Any:
    """Stamp the prepared-domain contract onto ``adata`` (in place).

    The last step of every modality's preparation (RNA, ATAC, protein, features, image).

    Parameters
    ----------
    adata
        The prepared cells.
    domain
        Domain name (e.g. ``"rna"``, ``"rna_batch2"``), stored in ``obs["domain"]``.
    modality
        One of :data:`MODALITIES`.
    label_key
        Label column; when present in ``obs`` it is made categorical and must not be all
        missing. ``None`` or an absent column means the domain is unlabelled.
    params
        Every preprocessing parameter, stored in ``uns["cellbridge"]["params"]`` through
        :func:`jsonable`, so the file stays readable.
    source
        Input path, stored in ``uns["cellbridge"]["source"]`` and named in errors.
    qc
        Optional per-cell QC table of all input cells (kept and removed), stored in
        ``uns["cellbridge"]["qc"]`` for plotting.

    Returns
    -------
    ``adata``.

    Raises
    ------
    InputError
        For duplicated cell names, an all-missing label column or ``obs["split"]`` values other
        than ``"train"``/``"test"``.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
    if not isinstance(domain, str) or not domain:
        raise ValueError(f"domain must be a non-empty string, not {domain!r}")
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()].unique()
        raise InputError(source, f"{len(dup)} cell name(s) occur more than once (e.g. {dup[0]!r})")
    adata.obs[DOMAIN_KEY] = pd.Categorical([domain] * adata.n_obs)
    if label_key is not None and label_key in adata.obs:
        check_labels(adata.obs[label_key], path=source, what=f"label column {label_key!r}")
        if not isinstance(adata.obs[label_key].dtype, pd.CategoricalDtype):
            adata.obs[label_key] = as_label_categories(adata.obs[label_key])
    if SPLIT_KEY in adata.obs:
        check_split(adata.obs[SPLIT_KEY], path=source)
    info: dict[str, Any] = {
        "modality": modality,
        "domain": domain,
        "params": jsonable(dict(params)),
        "source": None if source is None else os.fspath(source),
        "version": package_version(),
    }
    if qc is not None:
        info["qc"] = qc
    adata.uns[UNS_KEY] = info
    return adata


# ------------------------------------------------------------------------------ validate
def domain_error(name: str, adata: Any, problem: str) -> InputError:
    """An :class:`InputError` naming the domain (and its source file when known)."""
    source = None
    try:
        source = adata.uns[UNS_KEY].get("source")
    except (AttributeError, KeyError, TypeError):
        pass
    where = f"domain {name!r}" + (f" ({source})" if source else "")
    return InputError(where, problem)


def domain_modality(adata: Any, name: str) -> str:
    """Modality recorded in ``adata.uns["cellbridge"]["modality"]``, checked."""
    meta = getattr(adata, "uns", {}).get(UNS_KEY) if hasattr(adata, "uns") else None
    if not isinstance(meta, Mapping) or "modality" not in meta:
        raise domain_error(name, adata, 'uns["cellbridge"]["modality"] is missing; is this a prepared domain?')
    modality = meta["modality"]
    if modality not in MODALITIES:
        raise domain_error(name, adata, f"unknown modality {modality!r}; expected one of {MODALITIES}")
    return str(modality)


def domain_params(adata: Any) -> dict[str, Any]:
    """Preprocessing parameters recorded in ``uns["cellbridge"]["params"]`` (JSON-able copy)."""
    return jsonable(dict(adata.uns.get(UNS_KEY, {}).get("params", {})))


def _is_finite(mat: Any) -> bool:
    mat = as_rows(mat)
    if isinstance(mat, OnDiskCSR):
        return all(bool(np.isfinite(block.data).all()) for block in mat.blocks())
    data = mat.data if sp.issparse(mat) else np.asarray(mat).reshape(-1)
    # blockwise: np.isfinite of a whole million-cell matrix is a temporary of a quarter of its size
    return all(bool(np.isfinite(data[i : i + BLOCK_ENTRIES]).all()) for i in range(0, data.size, BLOCK_ENTRIES))


def _check_matrix(name: str, adata: Any, mat: Any, what: str, *, nonnegative: bool = False) -> None:
    if mat is None:
        raise domain_error(name, adata, f"{what} is missing")
    if mat.shape != (adata.n_obs, adata.n_vars):
        raise domain_error(name, adata, f"{what} has shape {mat.shape}, expected {(adata.n_obs, adata.n_vars)}")
    if not _is_finite(mat):
        raise domain_error(name, adata, f"{what} contains NaN or infinite values")
    if nonnegative:
        data = mat.data if sp.issparse(mat) else np.asarray(mat)
        if data.size and data.min() < 0:
            raise domain_error(name, adata, f"{what} contains negative values; raw counts expected")


def image_size_of(adata: Any, name: str) -> int:
    """Side of the square crops in ``obsm["image"]``, checked."""
    if IMAGE_KEY not in adata.obsm:
        raise domain_error(name, adata, 'obsm["image"] is missing; image domains need their nucleus crops')
    img = adata.obsm[IMAGE_KEY]
    if np.ndim(img) != 3 or img.shape[1] != img.shape[2]:
        raise domain_error(name, adata, f'obsm["image"] must have shape (n_cells, S, S), got {np.shape(img)}')
    try:
        check_crop_side(img.shape[1])
    except ValueError as err:
        raise domain_error(name, adata, f'obsm["image"]: {err} (set the crop size of the image preprocessing)') from None
    if not _is_finite(img):
        raise domain_error(name, adata, 'obsm["image"] contains NaN or infinite values')
    return int(img.shape[1])


def validate_domain(adata: Any, name: str, *, likelihood_target: str | None = None) -> str:
    """Check that ``adata`` is a usable prepared domain; return its modality.

    Parameters
    ----------
    adata
        Prepared AnnData.
    name
        Domain name (used in error messages).
    likelihood_target
        Data the domain's likelihood needs: ``"x"``, ``"counts"``, ``"binary"`` or ``"image"``.

    Raises
    ------
    InputError
        Naming the domain and the problem.
    """
    import anndata as ad

    if not isinstance(adata, ad.AnnData):
        raise InputError(f"domain {name!r}", f"expected an AnnData, got {type(adata).__name__}")
    modality = domain_modality(adata, name)
    if adata.n_obs == 0:
        raise domain_error(name, adata, "has no cells")
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][:5].tolist()
        raise domain_error(name, adata, f"obs_names are not unique (e.g. {dup})")
    if modality == "image":
        image_size_of(adata, name)
        return modality
    if adata.n_vars == 0:
        raise domain_error(name, adata, "has no features")
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()][:5].tolist()
        raise domain_error(name, adata, f"var_names are not unique (e.g. {dup})")
    _check_matrix(name, adata, adata.X, "X")
    if likelihood_target == "counts":
        _check_matrix(name, adata, adata.layers.get("counts"), 'layers["counts"]', nonnegative=True)
    if likelihood_target == "binary" and "binary" in adata.layers:
        _check_matrix(name, adata, adata.layers["binary"], 'layers["binary"]', nonnegative=True)
    return modality
