"""The sci-CAR A549 loader: real data (when present), a synthetic copy of its layout, and the
restricted unpickler."""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellbridge import InputError
from cellbridge.preprocess.scicar import (
    SCICAR_FILES,
    load_scicar,
    read_cell_list,
    split_cells,
    write_scicar_inputs,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scicar_a549"


# ----------------------------------------------------------------------------- synthetic folder
def write_fake_scicar(folder: Path, *, n_cells: int = 30, n_genes: int = 12, n_peaks: int = 8, seed: int = 0) -> list[str]:
    """The published layout at toy size: features x cells npz, pickled ids, metadata CSV."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cells = [f"sci-RNA-A-{i:03d}.ACGT" for i in range(n_cells)]
    # stored as float, as some exports do; values are whole numbers
    sp.save_npz(folder / SCICAR_FILES["rna"], sp.csr_matrix(rng.poisson(2.0, (n_genes, n_cells)).astype(float)))
    sp.save_npz(folder / SCICAR_FILES["atac"], sp.csr_matrix(rng.poisson(1.0, (n_peaks, n_cells))))
    (folder / SCICAR_FILES["cells"]).write_bytes(pickle.dumps(cells, protocol=3))
    hours = np.array([0, 1, 3])[np.arange(n_cells) % 3]
    meta = pd.DataFrame(
        {"sample": cells, "cell_name": "A549", "experiment": "coassay", "treatment_time": hours.astype(float)}
    )
    # extra rows for other cells, including ones without a time, as in the GEO file
    extra = pd.DataFrame({"sample": ["sci-RNA-Z.TTTT"], "cell_name": ["293T"], "experiment": ["coassay"], "treatment_time": [np.nan]})
    pd.concat([extra, meta]).to_csv(folder / SCICAR_FILES["metadata"], index=False, na_rep="NA")
    return cells


@pytest.fixture
def fake(tmp_path) -> Path:
    write_fake_scicar(tmp_path / "scicar")
    return tmp_path / "scicar"


def test_fake_layout_loads(fake):
    data = load_scicar(fake)
    rna, atac, truth = data["rna"], data["atac"], data["truth"]
    assert rna.shape == (30, 12) and atac.shape == (30, 8)
    assert rna.var_names[0] == "gene_0000" and atac.var_names[-1] == "peak_007"
    assert rna.obs_names[0] == "rna_sci-RNA-A-000.ACGT" and atac.obs_names[0] == "atac_sci-RNA-A-000.ACGT"
    assert np.issubdtype(rna.X.dtype, np.integer)
    assert list(rna.obs["treatment_time"].cat.categories) == ["0h", "1h", "3h"]
    assert rna.obs["treatment_time"].tolist()[:3] == ["0h", "1h", "3h"]
    assert list(truth.columns) == ["cell_id", "domain", "obs_name", "cell_type", "split"]
    assert (rna.obs["split"].to_numpy() == atac.obs["split"].to_numpy()).all()
    assert (rna.obs["split"] == "test").sum() == 6  # 20 % of 30


def test_split_is_seeded_and_order_free():
    ids = [f"c{i}" for i in range(50)]
    a = split_cells(ids, seed=1)
    assert (a == split_cells(ids[::-1], seed=1).loc[ids]).all()
    assert (a == "test").sum() == 10
    assert not (a == split_cells(ids, seed=2)).all()


def test_write_scicar_inputs_mirrors_simulator(fake, tmp_path):
    paths = write_scicar_inputs(fake, tmp_path / "out", test_fraction=0.5, seed=3)
    assert set(paths) == {"rna", "atac", "truth"} and all(p.is_file() for p in paths.values())
    rna = ad.read_h5ad(paths["rna"])
    truth = pd.read_csv(paths["truth"], sep="\t")
    assert set(truth["obs_name"]) >= set(rna.obs_names)
    assert "cell_type" in rna.obs and (rna.obs["split"] == "test").sum() == 15
    # no temporary files left behind by the atomic writes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["atac.h5ad", "rna.h5ad", "truth.tsv"]


def test_shape_mismatch_names_file(fake):
    sp.save_npz(fake / SCICAR_FILES["atac"], sp.csr_matrix(np.ones((8, 29))))
    with pytest.raises(InputError, match="29|30") as exc:
        load_scicar(fake)
    assert SCICAR_FILES["atac"] in str(exc.value)


def test_non_integer_counts_refused(fake):
    m = sp.load_npz(fake / SCICAR_FILES["rna"]).toarray()
    m[0, 0] = 1.5
    sp.save_npz(fake / SCICAR_FILES["rna"], sp.csr_matrix(m))
    with pytest.raises(InputError, match="non-integer") as exc:
        load_scicar(fake)
    assert SCICAR_FILES["rna"] in str(exc.value)


def test_cells_missing_from_metadata(fake):
    meta = pd.read_csv(fake / SCICAR_FILES["metadata"])
    meta.iloc[1:5].to_csv(fake / SCICAR_FILES["metadata"], index=False)
    with pytest.raises(InputError, match="no treatment_time") as exc:
        load_scicar(fake)
    assert SCICAR_FILES["metadata"] in str(exc.value)


def test_conflicting_metadata_rows(fake):
    path = fake / SCICAR_FILES["metadata"]
    meta = pd.read_csv(path)
    pd.concat([meta, meta.iloc[[3]].assign(treatment_time=3.0)]).to_csv(path, index=False)
    with pytest.raises(InputError, match="more than once") as exc:
        load_scicar(fake)
    assert str(path) in str(exc.value)


def test_missing_folder_and_file(tmp_path, fake):
    with pytest.raises(InputError, match="does not exist"):
        load_scicar(tmp_path / "nowhere")
    (fake / SCICAR_FILES["rna"]).unlink()
    with pytest.raises(InputError, match="does not exist") as exc:
        load_scicar(fake)
    assert SCICAR_FILES["rna"] in str(exc.value)


# ----------------------------------------------------------------------------- restricted unpickler
class _Exploit:
    """Unpickling this object would run a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_malicious_pickle_is_refused_without_running(tmp_path, fake):
    marker = tmp_path / "pwned"
    payload = pickle.dumps([_Exploit(marker)])
    path = fake / SCICAR_FILES["cells"]
    path.write_bytes(payload)
    with pytest.raises(InputError, match="refused") as exc:
        load_scicar(fake)
    assert str(path) in str(exc.value)
    assert not marker.exists()
    # sanity check of the test itself: a plain unpickler would have run the command
    pickle.loads(payload)
    assert marker.exists()


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"a": 1}, "list of cell-id strings"),
        ([1, 2, 3], "list of cell-id strings"),
        ([], "empty"),
        (["a", "a"], "more than once"),
        (np.array(["a"]), "refused"),  # needs numpy globals
    ],
)
def test_cell_list_must_be_plain_strings(tmp_path, obj, message):
    path = tmp_path / "cells.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(InputError, match=message) as exc:
        read_cell_list(path)
    assert str(path) in str(exc.value)


def test_cell_list_tuple_and_truncated(tmp_path):
    path = tmp_path / "cells.pkl"
    path.write_bytes(pickle.dumps(("a", "b"), protocol=0))
    assert read_cell_list(path) == ["a", "b"]
    path.write_bytes(pickle.dumps(["a", "b"])[:-3])
    with pytest.raises(InputError, match="pickle") as exc:
        read_cell_list(path)
    assert str(path) in str(exc.value)


# ----------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real():
    if not DATA.is_dir():
        pytest.skip(f"sci-CAR data not found at {DATA} (see shared/data/README.md)")
    return load_scicar(DATA)


@pytest.mark.realdata
def test_real_shapes_and_counts(real):
    rna, atac = real["rna"], real["atac"]
    assert rna.shape == (1874, 2613) and atac.shape == (1874, 815)
    assert rna.obs["treatment_time"].value_counts().to_dict() == {"0h": 473, "1h": 694, "3h": 707}
    assert (atac.obs["treatment_time"].to_numpy() == rna.obs["treatment_time"].to_numpy()).all()
    for adata in (rna, atac):
        assert np.issubdtype(adata.X.dtype, np.integer) and adata.X.data.min() >= 1
        assert adata.obs_names.is_unique


@pytest.mark.realdata
def test_real_truth_pairs_rna_with_atac(real):
    truth = real["truth"]
    assert len(truth) == 2 * 1874
    wide = truth.pivot(index="cell_id", columns="domain", values="obs_name")
    assert wide.notna().all().all() and len(wide) == 1874
    assert (wide["rna"].str.removeprefix("rna_") == wide["atac"].str.removeprefix("atac_")).all()
    assert set(wide["rna"]) == set(real["rna"].obs_names)
    splits = truth.pivot(index="cell_id", columns="domain", values="split")
    assert (splits["rna"] == splits["atac"]).all()
    assert (splits["rna"] == "test").sum() == round(0.2 * 1874)
