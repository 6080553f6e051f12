"""Loader for the paired sci-CAR A549 RNA + ATAC co-assay (Cao et al., Science 2018).

This is the validation data set of Yang et al. (Nat. Commun. 12, 31, 2021), in the processed
form published with their code (``uhlerlab/cross-modal-autoencoders``,
``model_rna_atac/processed_data/transcription_factor/``, MIT). A folder holds:

``diff_expr_shared_cells.npz``
    scipy sparse **genes x cells** RNA UMI counts (2613 x 1874).
``diff_atac_shared_cells.npz``
    scipy sparse **peaks x cells** ATAC counts (815 x 1874).
``shared_cells.pkl``
    pickled list of the cell ids (``sci-RNA-...``) in the column order of both matrices.
``GSM3271040_RNA_sciCAR_A549_cell.txt``
    CSV with columns ``sample, cell_name, experiment, treatment_time`` (hours of
    dexamethasone: 0, 1 or 3); ``sample`` holds the cell ids.

Both modalities were measured in the same cells, so every RNA profile has a true ATAC
partner. :func:`load_scicar` returns the two domains with a shared truth table and a seeded
train/test split of cell ids; :func:`write_scicar_inputs` writes them in the simulator's file
layout so the workflow treats them as any other input.

Naming: feature names are not included in the files, so genes are ``gene_0000``... and peaks
``peak_000``... in matrix row order. Cells are ``rna_<cell id>`` and ``atac_<cell id>``.
``obs["treatment_time"]`` is categorical with the ordered values ``"0h"``, ``"1h"``, ``"3h"``;
the same values are in ``obs["cell_type"]`` and the truth table's ``cell_type`` so the
default label column works unchanged.

The pickle is read with a restricted unpickler that refuses every global, so a tampered file
cannot run code; only a list or tuple of strings is accepted.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._io import InputError, logger, require_path, write_h5ad, write_table
from .counts import integer_counts, validate_counts

__all__ = ["SCICAR_FILES", "load_scicar", "read_cell_list", "split_cells", "write_scicar_inputs"]

#: File names of the published processed sci-CAR data.
SCICAR_FILES = {
    "rna": "diff_expr_shared_cells.npz",
    "atac": "diff_atac_shared_cells.npz",
    "cells": "shared_cells.pkl",
    "metadata": "GSM3271040_RNA_sciCAR_A549_cell.txt",
}
TREATMENT_LEVELS = ("0h", "1h", "3h")
TRUTH_COLUMNS = ["cell_id", "domain", "obs_name", "cell_type", "split"]


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickler that only builds plain containers and strings: every global is refused.

    Lists, tuples and strings are built by opcodes that need no global lookup, so refusing
    ``find_class`` blocks every route to calling code (``__reduce__`` payloads, class
    instances) while the legitimate cell list still loads.
    """

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refused to load global {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id")


def read_cell_list(path: str | os.PathLike) -> list[str]:
    """Read a pickled list of cell ids without executing anything from the file.

    Parameters
    ----------
    path
        Pickle holding a list (or tuple) of strings.

    Returns
    -------
    The cell ids.

    Raises
    ------
    InputError
        If the file is missing, is not a pickle, refers to any global (class or function), or
        holds anything but a non-empty list/tuple of unique strings.
    """
    p = require_path(path, "cell list")
    data = p.read_bytes()
    try:
        obj = _NoGlobalsUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise InputError(p, f"refused to unpickle: {exc}; only a plain list of cell-id strings is accepted") from exc
    except Exception as exc:  # truncated or not a pickle at all
        raise InputError(p, f"is not a readable pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, (list, tuple)) or not all(isinstance(x, str) for x in obj):
        raise InputError(p, f"must hold a list of cell-id strings, found {type(obj).__name__}")
    if len(obj) == 0:
        raise InputError(p, "the cell list is empty")
    if len(set(obj)) != len(obj):
        raise InputError(p, "the cell list names some cells more than once")
    return list(obj)


def split_cells(cell_ids, *, test_fraction: float = 0.2, seed: int = 0) -> pd.Series:
    """Seeded train/test assignment of cell ids.

    The ids are sorted before shuffling, so the split depends only on the set of ids and the
    seed, not on file order.

    Parameters
    ----------
    cell_ids
        Unique cell ids.
    test_fraction
        Fraction of cells (rounded) assigned to ``"test"``.
    seed
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    ``"train"``/``"test"`` per cell id, indexed by id, in the input order.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), not {test_fraction}")
    ids = pd.Index(cell_ids)
    order = np.random.default_rng(seed).permutation(np.sort(ids.to_numpy().astype(str)))
    n_test = int(round(test_fraction * len(ids)))
    test = set(order[:n_test])
    return pd.Series(["test" if c in test else "train" for c in ids], index=ids, name="split")


def _read_matrix(path: Path, *, n_cells: int, cells_file: Path) -> sp.csr_matrix:
    """Cells x features integer counts from a features x cells ``.npz``."""
    p = require_path(path, "count matrix")
    try:
        m = sp.load_npz(p)
    except Exception as exc:
        raise InputError(p, f"is not a scipy sparse .npz matrix ({type(exc).__name__}: {exc})") from exc
    if m.ndim != 2 or m.shape[1] != n_cells:
        raise InputError(
            p,
            f"has shape {m.shape} (features x cells) but {cells_file.name} lists {n_cells} cells; "
            "the matrix columns must be the cells, in the order of the list",
        )
    return sp.csr_matrix(m.T)


def _read_treatment(path: Path, cell_ids: list[str]) -> pd.Categorical:
    p = require_path(path, "cell metadata")
    try:
        meta = pd.read_csv(p, dtype={"sample": str})
    except Exception as exc:
        raise InputError(p, f"could not be read as CSV ({type(exc).__name__}: {exc})") from exc
    missing_cols = {"sample", "treatment_time"} - set(meta.columns)
    if missing_cols:
        raise InputError(p, f"lacks column(s) {', '.join(sorted(missing_cols))}; columns: {', '.join(meta.columns)}")
    listed = meta[meta["sample"].isin(cell_ids)]
    if listed["sample"].duplicated().any():
        dup = listed.loc[listed["sample"].duplicated(), "sample"].iloc[0]
        raise InputError(p, f"lists cell {dup!r} more than once; each cell needs exactly one treatment_time")
    meta = listed.set_index("sample")
    hours = meta["treatment_time"].reindex(cell_ids)
    if hours.isna().any():
        absent = hours.index[hours.isna()]
        raise InputError(
            p,
            f"{len(absent)} of {len(cell_ids)} cells have no treatment_time (e.g. {absent[0]!r}); "
            "every cell of the cell list needs one",
        )
    labels = [f"{h:g}h" for h in pd.to_numeric(hours, errors="raise")]
    unknown = sorted(set(labels) - set(TREATMENT_LEVELS))
    if unknown:
        raise InputError(p, f"unexpected treatment_time values {unknown}; expected 0, 1 or 3 hours")
    return pd.Categorical(labels, categories=list(TREATMENT_LEVELS), ordered=True)


def _numbered(prefix: str, n: int, width: int) -> pd.Index:
    return pd.Index([f"{prefix}_{i:0{width}d}" for i in range(n)])


def _domain_adata(X, *, prefix: str, feature_prefix: str, width: int, cell_ids, treatment, split) -> ad.AnnData:
    obs = pd.DataFrame(index=pd.Index([f"{prefix}_{c}" for c in cell_ids]))
    obs["treatment_time"] = treatment
    obs["cell_type"] = treatment
    obs["split"] = pd.Categorical(split, categories=["train", "test"])
    var = pd.DataFrame(index=_numbered(feature_prefix, X.shape[1], width))
    return ad.AnnData(X=X, obs=obs, var=var)


def load_scicar(folder: str | os.PathLike, *, test_fraction: float = 0.2, seed: int = 0) -> dict:
    """Load the sci-CAR A549 co-assay as two domains plus their truth table.

    Parameters
    ----------
    folder
        Folder with the files of :data:`SCICAR_FILES`.
    test_fraction
        Fraction of cell ids held out as ``"test"`` (the same cells in both domains).
    seed
        Seed of the split (:func:`split_cells`).

    Returns
    -------
    ``{"rna": AnnData, "atac": AnnData, "truth": DataFrame}``. The AnnData objects are cells x
    features with integer counts in ``X`` (CSR int32), ``obs["treatment_time"]``,
    ``obs["cell_type"]`` (same values) and ``obs["split"]``. The truth table has one row per
    profile with columns ``cell_id, domain, obs_name, cell_type, split``.

    Raises
    ------
    InputError
        Missing or unreadable files, a refused pickle, shapes that disagree, cells without
        metadata, or counts that are not non-negative integers; each names the file.
    """
    root = require_path(folder, "sci-CAR folder")
    if not root.is_dir():
        raise InputError(root, "is not a folder")
    cells_file = root / SCICAR_FILES["cells"]
    cell_ids = read_cell_list(cells_file)
    treatment = _read_treatment(root / SCICAR_FILES["metadata"], cell_ids)
    split = split_cells(cell_ids, test_fraction=test_fraction, seed=seed).to_numpy()

    domains = {}
    for domain, feature_prefix, width in (("rna", "gene", 4), ("atac", "peak", 3)):
        path = root / SCICAR_FILES[domain]
        X = _read_matrix(path, n_cells=len(cell_ids), cells_file=cells_file)
        adata = _domain_adata(
            X, prefix=domain, feature_prefix=feature_prefix, width=width, cell_ids=cell_ids, treatment=treatment, split=split
        )
        validate_counts(adata, path=path)
        adata.X = integer_counts(adata.X)
        domains[domain] = adata
        logger.info("%s: %d cells x %d %ss", path, adata.n_obs, adata.n_vars, feature_prefix)

    truth = pd.concat(
        [
            pd.DataFrame(
                {
                    "cell_id": cell_ids,
                    "domain": domain,
                    "obs_name": adata.obs_names.to_numpy(),
                    "cell_type": np.asarray(treatment, dtype=object),
                    "split": split,
                }
            )
            for domain, adata in domains.items()
        ],
        ignore_index=True,
    )[TRUTH_COLUMNS]
    return {**domains, "truth": truth}


def write_scicar_inputs(
    folder: str | os.PathLike, out_dir: str | os.PathLike, *, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, Path]:
    """Convert the sci-CAR folder into ``rna.h5ad``, ``atac.h5ad`` and ``truth.tsv``.

    The layout mirrors the simulator's outputs (``docs/design.md``): raw counts in ``X``,
    ``obs["cell_type"]``, obs names ``rna_<cellid>`` / ``atac_<cellid>``, and a truth table
    (tab-separated, no index). All files are written atomically.

    Parameters
    ----------
    folder
        Folder with the published files (see :func:`load_scicar`).
    out_dir
        Destination folder (created when absent).
    test_fraction, seed
        Passed to :func:`load_scicar`.

    Returns
    -------
    ``{"rna": path, "atac": path, "truth": path}``.
    """
    data = load_scicar(folder, test_fraction=test_fraction, seed=seed)
    out = Path(out_dir)
    source = os.fspath(Path(folder).resolve())
    paths: dict[str, Path] = {}
    for domain in ("rna", "atac"):
        adata = data[domain]
        adata.uns["source"] = source
        paths[domain] = write_h5ad(adata, out / f"{domain}.h5ad")
    paths["truth"] = write_table(data["truth"], out / "truth.tsv", index=False)
    return paths
