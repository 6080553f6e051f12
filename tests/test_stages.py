"""Stage functions: bad inputs fail with the file named and leave no output behind."""

import anndata as ad
import numpy as np
import pytest
from _synthetic import FAST_TRAIN, fast_model, make_domains

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


def test_reference_to_query_translation_with_a_saved_model(tmp_path):
    """New cells of one domain are translated with a saved model; features matched by name."""
    doms = make_domains(120, image_size=16, seed=0)
    model = fast_model({"rna": doms["rna"], "image": doms["image"]}, alignment="mmd", seed=0)
    model.train(max_epochs=2, **FAST_TRAIN)
    model.save(tmp_path / "model")

    query = doms["rna"][:30, ::-1].copy()  # new cells, features in another order
    query.write_h5ad(tmp_path / "query.h5ad")
    out = stages.translate_query(tmp_path / "model", "rna", "image", tmp_path / "query.h5ad", tmp_path / "out.h5ad")
    assert out.n_obs == 30 and out.obsm["image"].shape == (30, 16, 16)
    assert ad.read_h5ad(tmp_path / "out.h5ad").n_obs == 30

    bad = doms["rna"][:30, 1:].copy()  # one feature missing
    bad.write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(InputError, match=str(doms["rna"].var_names[0])):
        stages.translate_query(tmp_path / "model", "rna", "image", tmp_path / "bad.h5ad", tmp_path / "bad_out.h5ad")
    assert not (tmp_path / "bad_out.h5ad").exists()


def test_the_none_reference_takes_labels_only_when_asked(tmp_path):
    """Aligners use the label classifier when labels are on; the 'none' reference only with
    alignment.labels.baseline (label matching without an aligner), and the train stage's
    settings digest follows, so switching it reruns the 'none' model."""
    config = _config(tmp_path, tmp_path / "rna.csv")
    config["label_key"] = "cell_type"
    assert not stages.uses_labels(config, "mmd") and not stages.uses_labels(config, "none")
    config["alignment"]["labels"]["use"] = True
    assert stages.uses_labels(config, "mmd") and not stages.uses_labels(config, "none")
    before = stages.stage_settings(config, "train", method="none")
    config["alignment"]["labels"]["baseline"] = True
    assert stages.uses_labels(config, "none")
    assert stages.stage_settings(config, "train", method="none") != before
    config["alignment"]["labels"]["use"] = False  # no labels at all: the switch alone does nothing
    assert not stages.uses_labels(config, "none")
