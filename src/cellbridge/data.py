"""Register prepared AnnData domains as tensors for training and inference.

A prepared domain follows the contract of :mod:`cellbridge.contract` (which also
checks it). This module matches features against a trained model
(:func:`feature_order`) and serves minibatches (:class:`DomainData`).

Dense matrices are held as torch tensors (moved to the training device once);
sparse matrices stay CSR and only each minibatch is densified, so large ATAC
matrices are never densified as a whole. A sparse ``X`` read lazily
(:func:`cellbridge._io.read_h5ad` with ``lazy_x=True``) stays in its file
(:class:`cellbridge._io.OnDiskCSR`): each minibatch's rows are read from disk, so a million-cell
domain costs its crops and labels in memory, not its matrix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ._io import InputError, OnDiskCSR, as_rows, block_rows
from .contract import SPLIT_KEY, domain_error, validate_domain


def feature_order(adata: Any, name: str, features: Sequence[str]) -> np.ndarray | None:
    """Column indices that put ``adata``'s features in the order of ``features``.

    Returns ``None`` when the order already matches.

    Raises
    ------
    InputError
        Naming the missing and the extra features when the sets differ.
    """
    have = pd.Index(adata.var_names)
    want = pd.Index(list(features))
    if have.equals(want):
        return None
    missing = want.difference(have, sort=False)
    extra = have.difference(want, sort=False)
    if len(missing) or len(extra):
        parts = []
        if len(missing):
            parts.append(f"{len(missing)} feature(s) the model was trained on are missing: {_preview(missing)}")
        if len(extra):
            parts.append(f"{len(extra)} feature(s) unknown to the model: {_preview(extra)}")
        raise domain_error(name, adata, "features do not match the model; " + "; ".join(parts))
    return have.get_indexer(want)


def _preview(names: Sequence[str], k: int = 10) -> str:
    names = list(names)
    return ", ".join(map(str, names[:k])) + (f", ... ({len(names) - k} more)" if len(names) > k else "")


def _as_float32(mat: Any) -> np.ndarray | sp.csr_matrix | OnDiskCSR:
    if isinstance(mat, OnDiskCSR):
        return mat  # read as float32 CSR, row by row
    if sp.issparse(mat):
        return sp.csr_matrix(mat, dtype=np.float32)
    return np.ascontiguousarray(np.asarray(mat, dtype=np.float32))


def _rows_major(mat: Any) -> np.ndarray | sp.csr_matrix | OnDiskCSR:
    """``mat`` as CSR or a C-contiguous array (row access per minibatch), dtype unchanged."""
    if isinstance(mat, OnDiskCSR):
        return mat
    if sp.issparse(mat):
        return sp.csr_matrix(mat)
    return np.ascontiguousarray(np.asarray(mat))


def _column_subset(mat, order: np.ndarray | None):
    mat = as_rows(mat)
    if isinstance(mat, OnDiskCSR):
        return mat.with_columns(order)
    return mat if order is None else mat[:, order]


def estimate_x_scale(x: Any) -> float:
    """Factor that maps a cell's proportions over the modelled features to ``expm1(X)``.

    For ``X = log1p(counts / total * target_sum)`` restricted to some genes,
    ``sum_j expm1(X_ij) = target_sum * (fraction of the cell's counts in these
    genes)``; the median over cells is the factor a decoder's proportions are
    multiplied by before ``log1p`` to land in ``X``'s space (exactly
    ``target_sum`` when ``X`` was normalised after gene selection).
    Returns NaN when ``X`` has negative entries (not a log1p transform).
    """
    x = as_rows(x)
    if isinstance(x, OnDiskCSR):
        if any(block.nnz and block.data.min() < 0 for block in x.blocks()):
            return float("nan")
    elif sp.issparse(x):
        if x.nnz and x.data.min() < 0:
            return float("nan")
    else:
        x = np.asarray(x)
        if x.size and x.min() < 0:
            return float("nan")
    # row blocks: expm1 of the whole matrix would copy it (values and, for CSR, indices)
    step = block_rows(x.shape[1])
    totals = np.concatenate([_row_totals_expm1(x[i : i + step]) for i in range(0, x.shape[0], step)] or [np.zeros(0)])
    totals = totals[totals > 0]
    return float(np.median(totals)) if totals.size else float("nan")


def _row_totals_expm1(block: Any) -> np.ndarray:
    """Per-row sums of ``expm1`` of a block of rows."""
    if sp.issparse(block):
        return np.asarray(block.expm1().sum(1)).ravel()
    return np.expm1(block.astype(np.float64)).sum(1)


def _sparse_feature_variances(mat: sp.spmatrix, blocks: list) -> np.ndarray:
    """Per-feature variance as E[x^2] - E[x]^2, accumulated over row blocks in float64."""
    total, total_sq, count = np.zeros(mat.shape[1]), np.zeros(mat.shape[1]), 0
    for pick in blocks:
        part = sp.csr_matrix(mat[pick], dtype=np.float64)
        total += np.asarray(part.sum(0)).ravel()
        total_sq += np.asarray(part.multiply(part).sum(0)).ravel()
        count += part.shape[0]
    mean = total / count
    return total_sq / count - mean**2


def _dense_feature_variances(mat: Any, blocks: list) -> np.ndarray:
    """Per-feature (per-pixel) variance, merging row blocks with Chan et al.'s pairwise update."""
    count, mean, m2 = 0, 0.0, 0.0
    for pick in blocks:
        part = np.asarray(mat[pick], dtype=np.float64)
        part = part.reshape(part.shape[0], -1)
        n, part_mean = part.shape[0], part.mean(0)
        delta = part_mean - mean
        mean = mean + delta * (n / (count + n))
        m2 = m2 + ((part - part_mean) ** 2).sum(0) + delta**2 * (count * n / (count + n))
        count += n
    return m2 / count


def mean_feature_variance(mat: Any, rows: np.ndarray | None = None) -> float:
    """Mean over features (or pixels) of the per-feature variance across cells.

    Parameters
    ----------
    mat
        ``(n_cells, ...)`` dense array or sparse matrix.
    rows
        Cells to use (default: all). Passing them here rather than ``mat[rows]`` avoids a
        copy of the selected rows of the whole matrix.

    The statistics are accumulated over blocks of rows in float64, so no temporary of
    the size of the matrix is made.
    """
    n_rows = mat.shape[0] if rows is None else len(rows)
    if n_rows == 0:
        return 1.0
    step = block_rows(int(np.prod(mat.shape[1:])))
    starts = range(0, n_rows, step)
    blocks = [slice(i, i + step) for i in starts] if rows is None else [rows[i : i + step] for i in starts]
    mat = as_rows(mat)
    sparse = sp.issparse(mat) or isinstance(mat, OnDiskCSR)
    var = _sparse_feature_variances(mat, blocks) if sparse else _dense_feature_variances(mat, blocks)
    value = float(np.mean(var)) if np.size(var) else 0.0
    return value if value > 0 else 1.0


@dataclass
class DomainData:
    """Tensors of one registered domain.

    Attributes
    ----------
    name, modality
        Domain name and modality.
    obs_names
        Cell names in the order of the tensors.
    inputs
        Encoder input: ``X`` (vector domains) or ``obsm["image"]`` (image domains).
    targets
        Likelihood targets by key (``"x"``, ``"counts"``, ``"binary"``, ``"image"``).
    library
        Counts per cell summed over the modelled features (count likelihoods).
    labels
        Integer label codes, ``-1`` where unknown; ``None`` without labels.
    split
        ``obs["split"]`` as strings (``""`` where absent).
    """

    name: str
    modality: str
    obs_names: pd.Index
    inputs: Any
    targets: dict[str, Any] = field(default_factory=dict)
    library: np.ndarray | None = None
    labels: np.ndarray | None = None
    split: np.ndarray | None = None

    @property
    def n_obs(self) -> int:
        return len(self.obs_names)

    @property
    def input_key(self) -> str:
        return "image" if self.modality == "image" else "x"

    @classmethod
    def from_anndata(
        cls,
        adata: Any,
        name: str,
        *,
        likelihood_target: str,
        features: Sequence[str] | None = None,
        label_key: str | None = None,
        label_categories: Sequence[str] = (),
    ) -> DomainData:
        """Validate ``adata`` and extract the tensors the model needs.

        Parameters
        ----------
        adata
            Prepared domain.
        name
            Domain name.
        likelihood_target
            Target key of the domain's likelihood.
        features
            Feature names of a trained model; ``adata``'s features are matched
            to them by name and reordered.
        label_key, label_categories
            obs column with shared labels and the category order giving the codes.
        """
        modality = validate_domain(adata, name, likelihood_target=likelihood_target)
        targets: dict[str, Any] = {}
        library = None
        if modality == "image":
            inputs = np.ascontiguousarray(np.asarray(adata.obsm["image"], dtype=np.float32))
            targets["image"] = inputs
        else:
            order = feature_order(adata, name, features) if features is not None else None
            inputs = _as_float32(_column_subset(adata.X, order))
            targets["x"] = inputs
            if likelihood_target == "counts":
                # kept in their stored (integer) type, converted per minibatch: a float copy of a
                # million-cell count matrix would double what the domain costs in memory
                counts = _rows_major(_column_subset(adata.layers["counts"], order))
                targets["counts"] = counts
                library = np.asarray(counts.sum(1), dtype=np.float32).ravel()
                if (library <= 0).any():
                    n_empty = int((library <= 0).sum())
                    raise domain_error(name, adata, f'{n_empty} cell(s) have no counts in layers["counts"]')
            elif likelihood_target == "binary":
                binary = adata.layers["binary"] if "binary" in adata.layers else adata.X
                binary = _column_subset(binary, order)
                binary = binary.binarized() if isinstance(binary, OnDiskCSR) else (binary > 0).astype(np.float32)
                targets["binary"] = _as_float32(binary)
        labels = None
        if label_key is not None and label_key in adata.obs:
            labels = encode_labels(adata.obs[label_key], label_categories)
        split = adata.obs[SPLIT_KEY].astype(str).to_numpy() if SPLIT_KEY in adata.obs else None
        return cls(
            name=name,
            modality=modality,
            obs_names=pd.Index(adata.obs_names),
            inputs=inputs,
            targets=targets,
            library=library,
            labels=labels,
            split=split,
        )

    def training_cells(self, *, use_test_cells: bool = False) -> np.ndarray:
        """Indices of the cells training may use (all but ``obs["split"] == "test"``)."""
        if self.split is None or use_test_cells:
            return np.arange(self.n_obs)
        return np.flatnonzero(self.split != "test")

    def to(self, device: torch.device) -> DomainData:
        """Move dense arrays to ``device`` as tensors (sparse ones stay CSR on the host)."""

        def move(a):
            if a is None or sp.issparse(a) or isinstance(a, OnDiskCSR):
                return a
            return torch.as_tensor(a).to(device)

        inputs = move(self.inputs)
        # targets that are the input array itself (X for Gaussian, crops for images) are not copied twice
        targets = {k: inputs if v is self.inputs else move(v) for k, v in self.targets.items()}
        return DomainData(
            name=self.name,
            modality=self.modality,
            obs_names=self.obs_names,
            inputs=inputs,
            targets=targets,
            library=move(self.library),
            labels=move(self.labels),
            split=self.split,
        )

    def batch(self, idx: np.ndarray, device: torch.device, *, with_targets: bool = True) -> dict[str, torch.Tensor]:
        """Minibatch of cells ``idx`` as tensors on ``device``.

        Keys: the encoder input (``"x"`` or ``"image"``), the likelihood targets,
        ``"library"`` (count likelihoods) and ``"labels"`` (when labels exist).
        """
        out = {self.input_key: _rows(self.inputs, idx, device)}
        if with_targets:
            for key, mat in self.targets.items():
                if key not in out:
                    out[key] = _rows(mat, idx, device)
        if self.library is not None:
            out["library"] = _rows(self.library, idx, device)
        if self.labels is not None:
            out["labels"] = _rows(self.labels, idx, device)
        return out


def _rows(mat: Any, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    if sp.issparse(mat) or isinstance(mat, OnDiskCSR):
        return _to_device(_floating(torch.from_numpy(mat[idx].toarray())), device)
    if isinstance(mat, torch.Tensor):
        return _floating(mat[torch.as_tensor(idx, device=mat.device)]).to(device)
    return _to_device(_floating(torch.from_numpy(np.asarray(mat[idx]))), device)


def _floating(t: torch.Tensor) -> torch.Tensor:
    """Integer matrices (counts kept in their stored type) as float32; labels (1-d) unchanged."""
    if t.ndim > 1 and not t.is_floating_point():
        return t.float()
    return t


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor to ``device``; to a GPU through pinned memory, so the copy overlaps the compute."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def encode_labels(values: pd.Series, categories: Sequence[str]) -> np.ndarray:
    """Integer codes of ``values`` in ``categories``; missing or unknown values get ``-1``."""
    as_str = values.astype(object).where(values.notna(), None).map(lambda v: None if v is None else str(v))
    codes = pd.Categorical(as_str, categories=[str(c) for c in categories]).codes
    return np.asarray(codes, dtype=np.int64)


def label_categories(adatas: Mapping[str, Any], label_key: str) -> list[str]:
    """Sorted union of the non-missing labels in ``obs[label_key]`` over all domains.

    Raises
    ------
    InputError
        If no domain has the column.
    """
    found = [a.obs[label_key] for a in adatas.values() if label_key in a.obs]
    if not found:
        raise InputError(None, f"label_key {label_key!r} is not an obs column of any domain ({', '.join(adatas)})")
    labels = set()
    for col in found:
        labels.update(str(v) for v in col.dropna().unique())
    return sorted(labels)
