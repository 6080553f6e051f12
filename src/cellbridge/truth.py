"""Ground-truth pairing between domains (simulator truth, co-assays), and matching nuclei by position.

A truth table has one row per measured profile with the ``cell_id`` it came from.
Sequencing rows are identified by ``obs_name``; image rows by ``source_file`` and the
nucleus centroid (``centroid_y``, ``centroid_x``), because segmentation assigns its own
labels and so prepared nuclei can only be matched to the truth by position.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ._io import InputError, require_path
from .contract import NUCLEUS_POSITION


def read_truth(path: str | os.PathLike, *, nrows: int | None = None) -> pd.DataFrame:
    """Read and check a truth table (TSV).

    Parameters
    ----------
    path
        The table.
    nrows
        Read and check only the first rows (a quick check when the config is loaded,
        long before evaluation reads the whole table).

    Raises
    ------
    InputError
        When the file is missing, not a tab-separated table, lacks ``cell_id``, or has
        rows identified neither by ``obs_name`` nor by ``source_file`` + centroid.
    """
    p = require_path(path, "truth table")
    try:
        table = pd.read_csv(p, sep="\t", nrows=nrows, dtype={"cell_id": str, "obs_name": str, "source_file": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise InputError(p, f"not a readable TSV truth table ({type(err).__name__})") from None
    if "cell_id" not in table:
        # the header of a file that is no table would be its whole first line: not echoed
        found = "a single column: not tab-separated?" if table.shape[1] < 2 else f"{table.shape[1]} columns"
        raise InputError(
            p, f"truth table has no 'cell_id' column ({found}); expected cell_id, domain, obs_name (+ source_file, "
            "centroid_y, centroid_x for nuclei)"
        )
    has_name = table["obs_name"].notna() if "obs_name" in table else pd.Series(False, index=table.index)
    has_pos = (
        table[list(NUCLEUS_POSITION)].notna().all(axis=1)
        if set(NUCLEUS_POSITION) <= set(table.columns)
        else pd.Series(False, index=table.index)
    )
    if not (has_name | has_pos).all():
        bad = int((~(has_name | has_pos)).sum())
        raise InputError(
            p, f"{bad} truth rows have neither 'obs_name' nor 'source_file'+'centroid_y'+'centroid_x'"
        )
    return table


def cell_ids_for(obs: pd.DataFrame, truth: pd.DataFrame, *, max_distance: float = 5.0) -> np.ndarray:
    """The true ``cell_id`` of every row of ``obs`` (``None`` where it has no match).

    Rows are matched by obs name when the truth lists it, else (nuclei) by field file and
    nearest centroid within ``max_distance`` pixels.
    """
    ids = np.full(len(obs), None, dtype=object)
    if "obs_name" in truth:
        by_name = truth.dropna(subset=["obs_name"]).set_index("obs_name")["cell_id"]
        by_name = by_name[~by_name.index.duplicated()]
        hit = obs.index.isin(by_name.index)
        ids[hit] = by_name.reindex(obs.index[hit]).to_numpy()
    need_pos = ~pd.notna(ids)
    if need_pos.any() and set(NUCLEUS_POSITION) <= set(obs.columns) and set(NUCLEUS_POSITION) <= set(truth.columns):
        table = truth.dropna(subset=list(NUCLEUS_POSITION)).reset_index(drop=True)
        idx = match_nuclei(obs.loc[need_pos], table, max_distance=max_distance)
        matched = idx >= 0
        sub = np.flatnonzero(need_pos)[matched]
        ids[sub] = table["cell_id"].to_numpy()[idx[matched]]
    return ids


def match_nuclei(obs: pd.DataFrame, table: pd.DataFrame, *, max_distance: float = 5.0) -> np.ndarray:
    """Match nuclei to the nearest annotated/true nucleus of the same field.

    Parameters
    ----------
    obs
        Nuclei to annotate, with columns ``source_file``, ``centroid_y``, ``centroid_x``.
    table
        Reference nuclei with the same three columns (e.g. an annotation table,
        or the simulator's ``truth.tsv``). ``source_file`` is compared by file
        name, so paths and bare names match.
    max_distance
        Largest centroid distance (pixels) of a match.

    Returns
    -------
    numpy.ndarray
        For each row of ``obs``, the positional index of its match in ``table``,
        or -1 when no reference nucleus of that field lies within ``max_distance``.
        Several ``obs`` rows may match the same reference (e.g. an over-split nucleus).
    """
    for name, df in (("obs", obs), ("table", table)):
        missing = [c for c in NUCLEUS_POSITION if c not in df.columns]
        if missing:
            raise ValueError(f"{name} lacks the column(s) {', '.join(missing)}")
    result = np.full(len(obs), -1, dtype=np.int64)
    obs_files = obs["source_file"].astype(str).map(lambda s: Path(s).name).to_numpy()
    ref_files = table["source_file"].astype(str).map(lambda s: Path(s).name).to_numpy()
    obs_xy = obs[["centroid_y", "centroid_x"]].to_numpy(float)
    ref_xy = table[["centroid_y", "centroid_x"]].to_numpy(float)
    for name in np.unique(obs_files):
        ref_idx = np.flatnonzero(ref_files == name)
        if ref_idx.size == 0:
            continue
        rows = np.flatnonzero(obs_files == name)
        dist, nearest = cKDTree(ref_xy[ref_idx]).query(obs_xy[rows], distance_upper_bound=max_distance)
        found = np.isfinite(dist)
        result[rows[found]] = ref_idx[nearest[found]]
    return result


def paired_indices(ids_a: np.ndarray, ids_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(ia, ib)`` such that ``ids_a[ia] == ids_b[ib]``: the truly paired rows.

    Cells without an id, or whose id occurs more than once in a domain (ambiguous, e.g.
    a nucleus split in two by segmentation), are left out.
    """
    a = pd.Series(np.arange(len(ids_a)), index=pd.Index(ids_a, dtype=object))
    b = pd.Series(np.arange(len(ids_b)), index=pd.Index(ids_b, dtype=object))
    a = a[a.index.notna() & ~a.index.duplicated(keep=False)]
    b = b[b.index.notna() & ~b.index.duplicated(keep=False)]
    common = a.index.intersection(b.index)
    return a[common].to_numpy(), b[common].to_numpy()

