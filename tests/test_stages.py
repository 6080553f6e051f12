"""Stage functions: bad inputs fail with the file named and leave no output behind."""

import anndata as ad
import numpy as np
import pytest

from cellbridge import InputError, stages
from cellbridge.config import validate_config


def _config(tmp_path, rna_input):
    return validate_config({
        "run": "t",
        "truth": None,
        "domains": {
            "rna": {"modality": "rna", "input": str(rna_input)},
            "image": {"modality": "image", "input": str(tmp_path / "fields")},
        },
        "preprocess": {"rna": {"min_genes": 1, "min_cells": 1, "min_cells_after_qc": 5, "n_top_genes": 10}},
    })


@pytest.mark.parametrize("problem", ["nan", "negative", "fraction", "missing"])
def test_bad_counts_fail_naming_the_file_and_write_nothing(tmp_path, problem):
    x = np.random.default_rng(0).poisson(2.0, size=(30, 20)).astype(np.float32)
    x[0, 0] = {"nan": np.nan, "negative": -1.0, "fraction": 0.5, "missing": 1.0}[problem]
    src = tmp_path / "rna.h5ad"
    if problem != "missing":
        ad.AnnData(x).write_h5ad(src)
    out = tmp_path / "out" / "rna.h5ad"
    with pytest.raises(InputError) as err:
        stages.prepare_domain(_config(tmp_path, src), "rna", output=out, plot=tmp_path / "out" / "qc.png")
    assert str(src) in str(err.value)
    assert not out.exists() and not (tmp_path / "out" / "qc.png").exists()
    assert not list((tmp_path / "out").glob(".*")) if (tmp_path / "out").exists() else True


def test_unknown_domain_names_the_known_ones(tmp_path):
    with pytest.raises(InputError, match="the config defines: rna, image"):
        stages.prepare_domain(_config(tmp_path, tmp_path / "x.h5ad"), "atac")


def test_image_folder_without_images(tmp_path):
    (tmp_path / "fields").mkdir()
    (tmp_path / "fields" / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="fields"):
        stages.prepare_domain(_config(tmp_path, tmp_path / "x.h5ad"), "image", output=tmp_path / "img.h5ad")
    assert not (tmp_path / "img.h5ad").exists()
