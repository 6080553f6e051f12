"""Count-matrix readers, input validation, labels, the domain contract and RNA preprocessing."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from cellbridge import InputError, __version__
from cellbridge.contract import finalize_domain
from cellbridge.preprocess.counts import (
    attach_labels,
    read_counts,
    validate_counts,
)
from cellbridge.plotting import plot_qc
from cellbridge.preprocess.rna import prepare_rna


# ----------------------------------------------------------------------------- fixtures
def nb_counts(n_cells: int = 80, n_genes: int = 40, *, seed: int = 0) -> np.ndarray:
    """Negative-binomial counts with gene-specific means and cell-specific depth."""
    rng = np.random.default_rng(seed)
    mean = rng.gamma(1.0, 3.0, size=n_genes)[None, :] * rng.uniform(0.5, 2.0, size=(n_cells, 1))
    r = 2.0
    return rng.negative_binomial(r, r / (r + mean)).astype(np.int64)


def counts_adata(n_cells: int = 80, n_genes: int = 40, *, seed: int = 0, n_mito: int = 3) -> ad.AnnData:
    X = nb_counts(n_cells, n_genes, seed=seed)
    genes = [f"MT-{i}" for i in range(n_mito)] + [f"GENE{i}" for i in range(n_genes - n_mito)]
    return ad.AnnData(
        X=sp.csr_matrix(X),
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=genes),
    )


LOOSE = dict(min_genes=1, min_cells=1, min_cells_after_qc=5)


@pytest.fixture
def small() -> ad.AnnData:
    return counts_adata()


def dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def assert_names_file(exc: pytest.ExceptionInfo, path) -> None:
    assert str(path) in str(exc.value), f"error does not name {path}: {exc.value}"


# ----------------------------------------------------------------------------- readers
TINY = np.array([[0, 1, 5], [2, 0, 0], [3, 4, 1], [0, 0, 7]], dtype=np.int64)
CELLS = ["AAAC-1", "AAAG-1", "AACT-1", "AAGT-1"]
GENES = ["Gad1", "Sst", "MT-Co1"]
IDS = ["ENSG1", "ENSG2", "ENSG3"]


def check_tiny(adata: ad.AnnData, *, names: bool = True) -> None:
    np.testing.assert_array_equal(dense(adata.X), TINY)
    if names:
        assert list(adata.obs_names) == CELLS
        assert list(adata.var_names) == GENES


def write_tiny_mtx(folder: Path, *, gz_matrix: bool, features: str, gz_tsv: bool, n_cols: int = 3) -> Path:
    folder.mkdir()
    matrix = folder / "matrix.mtx"
    scipy.io.mmwrite(matrix, sp.coo_matrix(TINY.T))
    cols = [IDS, GENES, ["Gene Expression"] * 3][:n_cols]
    pd.DataFrame(dict(enumerate(cols))).to_csv(folder / features, sep="\t", header=False, index=False)
    pd.Series(CELLS).to_csv(folder / "barcodes.tsv", header=False, index=False)
    for name, do in (("matrix.mtx", gz_matrix), (features, gz_tsv), ("barcodes.tsv", gz_tsv)):
        if do:
            with open(folder / name, "rb") as src, gzip.open(folder / f"{name}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            (folder / name).unlink()
    return folder


def test_read_h5ad_x_and_layer_and_raw(tmp_path):
    a = ad.AnnData(
        X=np.log1p(TINY).astype(np.float32),
        obs=pd.DataFrame(index=CELLS),
        var=pd.DataFrame(index=GENES),
        layers={"counts": TINY},
    )
    a.raw = ad.AnnData(X=TINY.astype(np.float32), obs=a.obs, var=a.var)
    path = tmp_path / "x.h5ad"
    a.write_h5ad(path)
    check_tiny(read_counts(path, layer="counts"))
    check_tiny(read_counts(path, layer="raw"))
    with pytest.raises(InputError, match="non-integer") as exc:
        validate_counts(read_counts(path), path=path)
    assert_names_file(exc, path)
    with pytest.raises(InputError, match="no layer 'umi'") as exc:
        read_counts(path, layer="umi")
    assert_names_file(exc, path)


def test_read_10x_h5_v3(tmp_path):
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    csc = sp.csc_matrix(TINY.T)  # 10x stores features x cells, column-compressed by cell
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array(CELLS, dtype="S")
        m["data"] = csc.data.astype(np.int32)
        m["indices"] = csc.indices.astype(np.int64)
        m["indptr"] = csc.indptr.astype(np.int64)
        m["shape"] = np.array(csc.shape, dtype=np.int32)
        feats = m.create_group("features")
        feats["id"] = np.array(IDS, dtype="S")
        feats["name"] = np.array(GENES, dtype="S")
        feats["feature_type"] = np.array(["Gene Expression"] * 3, dtype="S")
        feats["genome"] = np.array(["GRCh38"] * 3, dtype="S")
    adata = read_counts(path)
    check_tiny(adata)
    assert list(adata.var["gene_ids"]) == IDS


@pytest.mark.parametrize(
    ("gz_matrix", "features", "gz_tsv", "n_cols"),
    [
        (True, "features.tsv", True, 3),  # Cell Ranger v3 (scanpy)
        (False, "genes.tsv", False, 2),  # Cell Ranger v2 (scanpy)
        (False, "features.tsv", True, 3),  # mixed compression (own reader)
        (True, "genes.tsv", False, 2),  # mixed (own reader)
    ],
)
def test_read_mtx_folder_layouts(tmp_path, gz_matrix, features, gz_tsv, n_cols):
    folder = write_tiny_mtx(tmp_path / "mtx", gz_matrix=gz_matrix, features=features, gz_tsv=gz_tsv, n_cols=n_cols)
    adata = read_counts(folder)
    check_tiny(adata)
    assert list(adata.var["gene_ids"]) == IDS
    # the matrix file itself also works
    matrix = next(folder.glob("matrix.mtx*"))
    check_tiny(read_counts(matrix))


def test_read_mtx_folder_missing_part(tmp_path):
    folder = write_tiny_mtx(tmp_path / "mtx", gz_matrix=True, features="features.tsv", gz_tsv=True)
    (folder / "barcodes.tsv.gz").unlink()
    with pytest.raises(InputError, match="barcodes.tsv") as exc:
        read_counts(folder)
    assert_names_file(exc, folder)


@pytest.mark.parametrize(("name", "sep"), [("x.csv", ","), ("x.tsv", "\t"), ("x.csv.gz", ","), ("x.txt", "\t")])
def test_read_delimited(tmp_path, name, sep):
    path = tmp_path / name
    pd.DataFrame(TINY, index=CELLS, columns=GENES).to_csv(path, sep=sep)
    check_tiny(read_counts(path))


def test_read_delimited_transposed(tmp_path):
    path = tmp_path / "genes_by_cells.tsv"
    pd.DataFrame(TINY.T, index=GENES, columns=CELLS).to_csv(path, sep="\t")
    check_tiny(read_counts(path, transpose=True))
    h5ad = tmp_path / "x.h5ad"
    ad.AnnData(X=TINY).write_h5ad(h5ad)
    with pytest.raises(InputError, match="transpose") as exc:
        read_counts(h5ad, transpose=True)
    assert_names_file(exc, h5ad)


def test_read_npz_both_orientations(tmp_path):
    path = tmp_path / "m.npz"
    sp.save_npz(path, sp.csr_matrix(TINY))
    adata = read_counts(path)
    check_tiny(adata, names=False)
    assert adata.obs_names[0] == "cell_0000" and adata.var_names[2] == "feature_0002"
    sp.save_npz(path, sp.csr_matrix(TINY.T))
    transposed = read_counts(path, transpose=True)
    check_tiny(transposed, names=False)
    assert transposed.obs_names[3] == "cell_0003" and transposed.var_names[0] == "feature_0000"


def test_duplicate_feature_names_made_unique(tmp_path):
    path = tmp_path / "dup.csv"
    pd.DataFrame(TINY, index=CELLS, columns=["Sst", "Sst", "Gad1"]).to_csv(path)
    # pandas itself renames duplicated headers to Sst.1; a 10x folder keeps them verbatim
    folder = write_tiny_mtx(tmp_path / "mtx", gz_matrix=False, features="genes.tsv", gz_tsv=False, n_cols=2)
    pd.DataFrame({0: IDS, 1: ["Sst", "Sst", "Gad1"]}).to_csv(folder / "genes.tsv", sep="\t", header=False, index=False)
    adata = read_counts(folder)
    assert adata.var_names.is_unique
    assert list(adata.var_names) == ["Sst", "Sst-1", "Gad1"]


# ----------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    path = tmp_path / "absent.h5ad"
    with pytest.raises(InputError, match="does not exist") as exc:
        read_counts(path)
    assert_names_file(exc, path)


@pytest.mark.parametrize("name", ["broken.h5ad", "broken.h5", "broken.npz"])
def test_corrupt_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not a matrix\x00\x01")
    with pytest.raises(InputError, match="could not be read|not a scipy sparse") as exc:
        read_counts(path)
    assert_names_file(exc, path)


def test_unknown_suffix_and_misplaced_options(tmp_path):
    path = tmp_path / "counts.xlsx"
    path.write_text("x")
    with pytest.raises(InputError, match="format") as exc:
        read_counts(path)
    assert_names_file(exc, path)
    csv = tmp_path / "c.csv"
    pd.DataFrame(TINY, index=CELLS, columns=GENES).to_csv(csv)
    with pytest.raises(InputError, match="layer"):
        read_counts(csv, layer="counts")


def test_non_numeric_csv(tmp_path):
    path = tmp_path / "meta.csv"
    pd.DataFrame({"gene": ["a", "b"], "n": [1, 2]}, index=["c1", "c2"]).to_csv(path)
    with pytest.raises(InputError, match="not numeric") as exc:
        read_counts(path)
    assert_names_file(exc, path)


@pytest.mark.parametrize(
    ("value", "message"),
    [(np.nan, "NaN"), (np.inf, "NaN or infinite"), (-1.0, "negative"), (0.5, "non-integer")],
)
def test_validate_counts_rejects(tmp_path, value, message):
    path = tmp_path / "bad.csv"
    table = pd.DataFrame(TINY.astype(float), index=CELLS, columns=GENES)
    table.iloc[2, 1] = value
    table.to_csv(path)
    adata = read_counts(path)
    with pytest.raises(InputError, match=message) as exc:
        validate_counts(adata, path=path)
    assert_names_file(exc, path)
    # the message points at the offending entry
    assert "AACT-1" in str(exc.value) and "Sst" in str(exc.value)


def test_validate_counts_accepts_float_integers_and_optional_fractions():
    a = ad.AnnData(X=TINY.astype(np.float32), obs=pd.DataFrame(index=CELLS), var=pd.DataFrame(index=GENES))
    assert validate_counts(a, path="x") is a
    a.X = a.X * 0.5
    validate_counts(a, path="x", require_integer=False)


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_validate_counts_empty_zero_and_duplicate_cells():
    zeros = ad.AnnData(X=np.zeros((3, 2)), obs=pd.DataFrame(index=["a", "b", "c"]))
    with pytest.raises(InputError, match="only zeros"):
        validate_counts(zeros, path="z.h5ad")
    with pytest.raises(InputError, match="empty"):
        validate_counts(ad.AnnData(X=np.zeros((0, 4))), path="e.h5ad")
    dup = ad.AnnData(X=np.ones((2, 2)), obs=pd.DataFrame(index=["a", "a"]))
    with pytest.raises(InputError, match="more than once") as exc:
        validate_counts(dup, path="d.h5ad")
    assert "d.h5ad" in str(exc.value)


# ----------------------------------------------------------------------------- labels, contract
def test_attach_labels_from_table_and_column(tmp_path, small):
    path = tmp_path / "labels.tsv"
    table = pd.DataFrame({"cell_type": ["B", "T"] * 20}, index=small.obs_names[:40])
    table.index.name = "cell"
    table.to_csv(path, sep="\t")
    attach_labels(small, path, label_key="cell_type")
    assert isinstance(small.obs["cell_type"].dtype, pd.CategoricalDtype)
    assert small.obs["cell_type"].iloc[:40].tolist() == ["B", "T"] * 20
    assert small.obs["cell_type"].iloc[40:].isna().all()  # unlisted cells stay unlabelled

    small.obs["annotation"] = ["x"] * small.n_obs
    attach_labels(small, "annotation", label_key="cell_type")
    assert set(small.obs["cell_type"]) == {"x"}


def test_attach_labels_all_nan_is_an_error(tmp_path, small):
    path = tmp_path / "labels.csv"
    pd.DataFrame({"cell_type": ["B", "T"]}, index=["other1", "other2"]).to_csv(path)
    with pytest.raises(InputError, match="no cell received a label") as exc:
        attach_labels(small, path)
    assert_names_file(exc, path)
    small.obs["cell_type"] = np.nan
    with pytest.raises(InputError, match="no labels") as exc:
        attach_labels(small, None, source="data.h5ad")
    assert "data.h5ad" in str(exc.value)
    with pytest.raises(InputError, match="neither a column"):
        attach_labels(small, tmp_path / "absent.tsv")


def test_finalize_domain_contract(small, tmp_path):
    small.obs["split"] = ["train", "test"] * 40
    out = finalize_domain(
        small, domain="rna2", modality="rna", label_key="cell_type", params={"k": (1, 2), "p": tmp_path}, source=tmp_path / "in.h5ad"
    )
    assert out.obs["domain"].dtype == "category" and set(out.obs["domain"]) == {"rna2"}
    info = out.uns["cellbridge"]
    assert info["modality"] == "rna" and info["domain"] == "rna2" and info["version"] == __version__
    assert info["params"] == {"k": [1, 2], "p": str(tmp_path)}
    assert info["source"] == str(tmp_path / "in.h5ad")
    assert out.obs["split"].tolist() == ["train", "test"] * 40

    small.obs["split"] = ["train", "tset"] * 40
    with pytest.raises(InputError, match="split"):
        finalize_domain(small, domain="rna", modality="rna", label_key=None, params={}, source="in.h5ad")
    with pytest.raises(ValueError, match="modality"):
        finalize_domain(small, domain="rna", modality="dna", label_key=None, params={}, source=None)


# ----------------------------------------------------------------------------- RNA
def test_prepare_rna_contract_and_hand_computed_value(small):
    X = dense(small.X)
    X[0, :] = 0
    X[0, 3:8] = [10, 20, 30, 20, 20]  # library size 100 over 5 genes
    small.X = sp.csr_matrix(X)
    small.obs["split"] = ["train"] * 60 + ["test"] * 20
    small.obs["cell_type"] = ["a", "b"] * 40
    before = small.copy()
    out = prepare_rna(small, n_top_genes=None, max_pct_mito=None, source="in.h5ad", **LOOSE)

    # input untouched
    np.testing.assert_array_equal(dense(small.X), dense(before.X))
    # X is log1p(counts / library * 1e4) by hand for cell0: gene3 = 10 of 100 counts
    col = out.var_names.get_loc("GENE0")  # small has 3 MT genes first, so column 3 is GENE0
    assert out.obs.loc["cell0", "total_counts"] == 100
    assert dense(out.X)[0, col] == pytest.approx(np.log1p(10 / 100 * 1e4), rel=1e-6)
    assert out.X.dtype == np.float32
    counts = out.layers["counts"]
    assert counts.shape == out.shape and np.issubdtype(counts.dtype, np.integer)
    expected = np.log1p(dense(counts) / out.obs["total_counts"].to_numpy()[:, None] * 1e4)
    np.testing.assert_allclose(dense(out.X), expected, rtol=1e-5, atol=1e-6)

    assert out.obs["domain"].dtype == "category" and set(out.obs["domain"]) == {"rna"}
    assert out.obs["split"].tolist() == small.obs.loc[out.obs_names, "split"].tolist()
    assert out.obs["cell_type"].dtype == "category"
    params = out.uns["cellbridge"]["params"]
    assert params["target_sum"] == 1e4 and params["hvg_flavor"] == "seurat_v3"
    assert params["hvg_flavor_used"] in ("seurat_v3", "seurat")
    assert out.uns["cellbridge"]["modality"] == "rna" and out.uns["cellbridge"]["source"] == "in.h5ad"
    assert {"n_genes_by_counts", "pct_counts_mt"} <= set(out.obs.columns)


def test_prepare_rna_hvg_count_and_roundtrip(small, tmp_path):
    out = prepare_rna(small, n_top_genes=15, target_sum=1e3, **LOOSE)
    assert out.n_vars == 15 and out.var["highly_variable"].all()
    assert "means" in out.var.columns
    assert {"dispersions", "variances_norm"} & set(out.var.columns)  # seurat / seurat_v3
    assert out.layers["counts"].shape == (out.n_obs, 15)
    path = tmp_path / "prepared.h5ad"
    out.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert back.uns["cellbridge"]["params"]["target_sum"] == 1e3
    assert back.uns["cellbridge"]["qc"]["kept"].all()
    png = plot_qc(back, tmp_path / "qc" / "rna_qc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mito_filter_removes_high_mt_cell(small):
    X = dense(small.X)
    X[5, :3] = 500  # cell5: nearly all counts mitochondrial
    small.X = sp.csr_matrix(X)
    out = prepare_rna(small, max_pct_mito=20.0, **LOOSE)
    assert "cell5" not in out.obs_names and out.n_obs == small.n_obs - 1
    qc = out.uns["cellbridge"]["qc"]
    assert not qc.loc["cell5", "kept"] and qc.loc["cell5", "pct_counts_mt"] > 80
    kept = prepare_rna(small, max_pct_mito=None, **LOOSE)
    assert "cell5" in kept.obs_names
    # a single prefix given as a string is one prefix, not its characters
    single = prepare_rna(small, mito_prefix="MT-", **LOOSE)
    assert "cell5" not in single.obs_names and single.obs["pct_counts_mt"].max() < 20


def test_no_mito_genes_means_no_mito_filter():
    adata = counts_adata(n_mito=0)
    out = prepare_rna(adata, **LOOSE)
    assert "pct_counts_mt" not in out.obs
    assert out.uns["cellbridge"]["params"]["mito_filter_applied"] is False


def test_min_genes_filter_and_too_few_cells(small):
    n_genes = np.asarray((small.X > 0).sum(axis=1)).ravel()
    threshold = int(np.median(n_genes))
    out = prepare_rna(small, min_genes=threshold, min_cells=1, min_cells_after_qc=5)
    assert out.n_obs == int((n_genes >= threshold).sum())
    with pytest.raises(InputError, match="min_cells_after_qc=50") as exc:
        prepare_rna(small, min_genes=n_genes.max() + 1, source="/data/pbmc.h5ad")
    assert "/data/pbmc.h5ad" in str(exc.value)


def test_prepare_rna_refuses_normalised_input(small):
    small.X = np.log1p(dense(small.X))
    with pytest.raises(InputError, match="non-integer") as exc:
        prepare_rna(small, source="norm.h5ad", **LOOSE)
    assert "norm.h5ad" in str(exc.value)
