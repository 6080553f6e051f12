"""Truth tables: reading, matching prepared cells to true ids, pairing across domains."""

import numpy as np
import pandas as pd
import pytest

from cellbridge import InputError
from cellbridge.truth import cell_ids_for, paired_indices, read_truth


def _write(tmp_path, df):
    path = tmp_path / "truth.tsv"
    df.to_csv(path, sep="\t", index=False)
    return path


def test_sequencing_rows_match_by_obs_name(tmp_path):
    truth = read_truth(_write(tmp_path, pd.DataFrame({
        "cell_id": ["c1", "c2", "c3", "c1", "c2"],
        "domain": ["rna"] * 3 + ["atac"] * 2,
        "obs_name": ["rna_c1", "rna_c2", "rna_c3", "atac_c1", "atac_c2"],
    })))
    rna = pd.DataFrame(index=["rna_c3", "rna_c1", "rna_x"])
    atac = pd.DataFrame(index=["atac_c2", "atac_c1"])
    ids_r, ids_a = cell_ids_for(rna, truth), cell_ids_for(atac, truth)
    assert list(ids_r) == ["c3", "c1", None]
    ia, ib = paired_indices(ids_r, ids_a)
    assert list(ids_r[ia]) == list(ids_a[ib]) == ["c1"]


def test_image_rows_match_by_file_and_centroid(tmp_path):
    truth = read_truth(_write(tmp_path, pd.DataFrame({
        "cell_id": ["a", "b", "c"],
        "domain": ["image"] * 3,
        "source_file": ["f0.tif", "f0.tif", "f1.tif"],
        "centroid_y": [10.0, 50.0, 10.0],
        "centroid_x": [10.0, 50.0, 10.0],
    })))
    obs = pd.DataFrame(
        {"source_file": ["f1.tif", "f0.tif", "f0.tif"], "centroid_y": [11.0, 49.0, 30.0],
         "centroid_x": [9.0, 51.0, 30.0]},
        index=["n1", "n2", "n3"],
    )
    assert list(cell_ids_for(obs, truth, max_distance=5)) == ["c", "b", None]


def test_ambiguous_ids_are_not_paired():
    ia, ib = paired_indices(np.array(["x", "x", "y"], dtype=object), np.array(["y", "x"], dtype=object))
    assert list(ia) == [2] and list(ib) == [0]


def test_bad_truth_tables(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_truth(tmp_path / "missing.tsv")
    with pytest.raises(InputError, match="no 'cell_id' column"):
        read_truth(_write(tmp_path, pd.DataFrame({"obs_name": ["a"]})))
    with pytest.raises(InputError, match="neither 'obs_name'"):
        read_truth(_write(tmp_path, pd.DataFrame({"cell_id": ["a", "b"], "obs_name": ["x", None]})))
