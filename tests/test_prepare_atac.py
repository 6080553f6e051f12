"""ATAC preprocessing (binarisation, TF-IDF, LSI) and protein CLR normalisation."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellbridge import InputError
from cellbridge.preprocess.atac import lsi, prepare_atac, tfidf
from cellbridge.preprocess.protein import clr, prepare_protein

LOOSE = dict(min_cells=1, min_peaks_per_cell=1, min_cells_after_qc=1)


def make_adata(X, *, prefix: str = "cell", feature: str = "peak") -> ad.AnnData:
    X = np.asarray(X)
    return ad.AnnData(
        X=sp.csr_matrix(X),
        obs=pd.DataFrame(index=[f"{prefix}{i}" for i in range(X.shape[0])]),
        var=pd.DataFrame(index=[f"{feature}{j}" for j in range(X.shape[1])]),
    )


def sparse_counts(n_cells: int = 120, n_peaks: int = 60, *, seed: int = 0) -> np.ndarray:
    """Sparse peak counts: per-peak accessibility times per-cell depth, mostly 0/1/2."""
    rng = np.random.default_rng(seed)
    p = rng.beta(0.6, 3.0, size=n_peaks)[None, :] * rng.uniform(0.3, 1.0, size=(n_cells, 1))
    return rng.binomial(2, p)


# counts for the hand-computed TF-IDF: 2 cells x 3 peaks
HAND = np.array([[2, 1, 0], [0, 3, 1]])


def test_tfidf_hand_computed_binary():
    # binary [[1,1,0],[0,1,1]]: tf = 1/2 everywhere; idf = n_cells / cells with peak = [2, 1, 2]
    out = tfidf((HAND > 0).astype(int)).toarray()
    expected = np.array(
        [
            [np.log1p(0.5 * 2 * 1e4), np.log1p(0.5 * 1 * 1e4), 0.0],
            [0.0, np.log1p(0.5 * 1 * 1e4), np.log1p(0.5 * 2 * 1e4)],
        ]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.dtype == np.float32


def test_tfidf_hand_computed_counts_and_scale():
    # counts: cell totals [3, 4]; peak totals [2, 4, 1]; idf = 2 / totals = [1, 0.5, 2]
    out = tfidf(HAND, scale_factor=100).toarray()
    expected = np.array(
        [
            [np.log1p(2 / 3 * 1 * 100), np.log1p(1 / 3 * 0.5 * 100), 0.0],
            [0.0, np.log1p(3 / 4 * 0.5 * 100), np.log1p(1 / 4 * 2 * 100)],
        ]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_tfidf_refuses_empty_rows():
    with pytest.raises(ValueError, match="at least one count"):
        tfidf(np.array([[1, 0], [0, 0]]))


def test_prepare_atac_contract_on_hand_example():
    adata = make_adata(HAND)
    adata.obs["split"] = ["train", "test"]
    out = prepare_atac(adata, source="peaks.h5ad", **LOOSE)
    np.testing.assert_allclose(out.X.toarray(), tfidf((HAND > 0).astype(int)).toarray())
    assert sp.isspmatrix_csr(out.X) and out.X.dtype == np.float32
    np.testing.assert_array_equal(out.layers["counts"].toarray(), HAND)
    assert np.issubdtype(out.layers["counts"].dtype, np.integer)
    np.testing.assert_array_equal(out.layers["binary"].toarray(), (HAND > 0).astype(int))
    assert out.obs["split"].tolist() == ["train", "test"]
    assert out.obs["n_peaks"].tolist() == [2, 2] and out.obs["total_counts"].tolist() == [3, 4]
    info = out.uns["cellbridge"]
    assert info["modality"] == "atac" and info["domain"] == "atac" and info["source"] == "peaks.h5ad"
    assert info["params"]["binarize"] is True and info["params"]["scale_factor"] == 1e4
    assert set(out.obs["domain"]) == {"atac"}

    on_counts = prepare_atac(adata, binarize=False, **LOOSE)
    np.testing.assert_allclose(on_counts.X.toarray(), tfidf(HAND).toarray())
    raw = prepare_atac(adata, tfidf=False, **LOOSE)
    np.testing.assert_array_equal(raw.X.toarray(), (HAND > 0).astype(np.float32))


def test_prepare_atac_filters_cells_and_peaks():
    X = sparse_counts()
    X[:, 7] = 0
    X[:2, 7] = 1  # peak7 accessible in 2 cells only
    X[3, :] = 0
    X[3, 0] = 1  # cell3 has a single peak
    adata = make_adata(X)
    out = prepare_atac(adata, min_cells=3, min_peaks_per_cell=2, min_cells_after_qc=10)
    assert "cell3" not in out.obs_names and "peak7" not in out.var_names
    assert (out.var["n_cells"] >= 3).all()
    assert not out.uns["cellbridge"]["qc"].loc["cell3", "kept"]
    assert (np.diff(out.layers["binary"].indptr) >= 1).all()


def test_prepare_atac_top_peaks_are_the_most_accessible():
    X = sparse_counts()
    n_cells = (X > 0).sum(axis=0)
    out = prepare_atac(make_adata(X), n_top_peaks=10, **LOOSE)
    assert out.n_vars == 10
    kept = np.array([int(name[4:]) for name in out.var_names])
    assert n_cells[kept].min() >= np.sort(n_cells)[-10]


def test_lsi_components_and_first_component_dropped():
    X = sparse_counts(seed=1)
    out = prepare_atac(make_adata(X), lsi_components=4, **LOOSE)
    emb = out.obsm["X_lsi"]
    assert emb.shape == (out.n_obs, 4) and emb.dtype == np.float32
    full = lsi(out.X, n_components=5, drop_first=False)
    # dropping the first component leaves components 2..5 of the full decomposition
    np.testing.assert_allclose(np.abs(emb), np.abs(full[:, 1:]), atol=1e-3)
    assert "X_lsi" not in prepare_atac(make_adata(X), **LOOSE).obsm


def test_prepare_atac_bad_input_names_source():
    X = sparse_counts().astype(float)
    X[0, 0] = 0.3
    with pytest.raises(InputError, match="non-integer") as exc:
        prepare_atac(make_adata(X), source="frag.h5ad")
    assert "frag.h5ad" in str(exc.value)
    with pytest.raises(InputError, match="min_cells_after_qc=50") as exc:
        prepare_atac(make_adata(sparse_counts()), min_peaks_per_cell=10_000, source="peaks.h5ad")
    assert "peaks.h5ad" in str(exc.value)


# ----------------------------------------------------------------------------- protein
def test_clr_hand_computed():
    # cell0: log(1+x) = [log2, log4, 0] -> mean log 8 / 3 -> g = 2 -> log1p(x / 2)
    # cell1: log(1+x) = [0, 0, log8]    -> g = 2 as well
    x = np.array([[1, 3, 0], [0, 0, 7]])
    expected = np.array([[np.log(1.5), np.log(2.5), 0.0], [0.0, 0.0, np.log(4.5)]])
    np.testing.assert_allclose(clr(x), expected, rtol=1e-6)
    np.testing.assert_allclose(clr(sp.csr_matrix(x)), expected, rtol=1e-6)


def test_prepare_protein_contract():
    rng = np.random.default_rng(3)
    X = rng.poisson(rng.gamma(2.0, 20.0, size=(1, 12)), size=(60, 12))
    X[4] = 0  # an empty droplet-like cell is removed
    adata = make_adata(X, feature="CD")
    adata.obs["cell_type"] = ["B", "T", "NK"] * 20
    out = prepare_protein(adata, min_cells_after_qc=10, source="adt.csv")
    assert out.n_obs == 59 and "cell4" not in out.obs_names
    np.testing.assert_array_equal(out.layers["counts"].toarray(), np.delete(X, 4, axis=0))
    np.testing.assert_allclose(out.X, clr(np.delete(X, 4, axis=0)))
    assert out.X.dtype == np.float32
    assert out.uns["cellbridge"]["modality"] == "protein" and set(out.obs["domain"]) == {"protein"}
    assert out.obs["cell_type"].dtype == "category"
    with pytest.raises(InputError, match="min_cells_after_qc=100") as exc:
        prepare_protein(adata, min_cells_after_qc=100, source="adt.csv")
    assert "adt.csv" in str(exc.value)
