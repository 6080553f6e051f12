"""Config validation: defaults filled, bad values named with the allowed ones."""

import copy
from pathlib import Path

import pytest
import yaml

from cellbridge import InputError
from cellbridge.config import load_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {
    "domains": {
        "rna": {"modality": "rna", "input": "simulated"},
        "image": {"modality": "image", "input": "simulated"},
    }
}


def test_defaults_are_filled():
    cfg = validate_config(copy.deepcopy(MINIMAL))
    assert cfg["run"] == "demo"
    assert cfg["simulate"]["n_cells"] == 2000
    assert cfg["preprocess"]["rna"]["n_top_genes"] == 1000
    assert cfg["preprocess"]["image"]["crop_size"] == 32
    assert cfg["domains"]["rna"]["layer"] is None


@pytest.mark.parametrize("name", ["config.yaml", "scicar.yaml", "three_domains.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(ROOT / "config" / name)
    assert len(cfg["domains"]) >= 2


def test_enum_error_names_key_and_allowed_values():
    cfg = copy.deepcopy(MINIMAL)
    cfg["domains"]["rna"]["modality"] = "rnaseq"
    with pytest.raises(InputError) as err:
        validate_config(cfg, source="my.yaml")
    msg = str(err.value)
    assert "my.yaml" in msg and "domains.rna.modality" in msg
    assert "allowed values: rna, atac, protein, image" in msg


def test_unknown_key_is_an_error_listing_known_keys():
    cfg = copy.deepcopy(MINIMAL)
    cfg["preprocess"] = {"rna": {"n_top_gene": 10}}
    with pytest.raises(InputError, match=r"preprocess\.rna.*n_top_gene.*allowed keys: .*n_top_genes"):
        validate_config(cfg)


def test_out_of_range_value():
    cfg = copy.deepcopy(MINIMAL)
    cfg["simulate"] = {"n_cells": 3}
    with pytest.raises(InputError, match=r"simulate\.n_cells"):
        validate_config(cfg)


def test_simulator_cannot_provide_protein():
    cfg = copy.deepcopy(MINIMAL)
    cfg["domains"]["rna"]["modality"] = "protein"
    with pytest.raises(InputError, match="simulator produces no 'protein'"):
        validate_config(cfg)


def test_atac_needs_simulated_atac():
    cfg = copy.deepcopy(MINIMAL)
    cfg["simulate"] = {"atac": False}
    cfg["domains"]["atac"] = {"modality": "atac", "input": "simulated"}
    with pytest.raises(InputError, match="simulates: rna, image"):
        validate_config(cfg)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("domains: [unclosed\n")
    with pytest.raises(InputError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(InputError, match="mapping"):
        load_config(lst)


def test_seeds_from_the_command_line_are_integers():
    cfg = copy.deepcopy(MINIMAL)
    cfg["seeds"] = ["0", "1"]  # as `snakemake --config seeds=[0,1]` passes them
    assert validate_config(cfg)["seeds"] == [0, 1]
    cfg = copy.deepcopy(MINIMAL)
    cfg["seeds"] = ["one"]
    with pytest.raises(InputError, match="seeds"):
        validate_config(cfg)


def test_a_method_may_set_its_own_alignment_weight():
    from cellbridge.align import get_aligner
    from cellbridge.stages import aligner_options, alignment_weight

    cfg = copy.deepcopy(MINIMAL)
    cfg["alignment"] = {
        "weight": 0.3,
        "adversarial": {"weight": 1.0, "conditional": True, "gradient_penalty": 1.0},
        "mmd": {"scales": [1.0]},
    }
    cfg = validate_config(cfg)
    assert alignment_weight(cfg, "adversarial") == 1.0
    assert alignment_weight(cfg, "mmd") == alignment_weight(cfg, "wasserstein") == 0.3
    assert alignment_weight(cfg, "none") == 0.0
    # the weight is a training option, not an argument of the aligner
    assert aligner_options(cfg, "adversarial") == {"conditional": True, "gradient_penalty": 1.0}
    aligner = get_aligner("adversarial", latent_dim=4, n_domains=2, n_labels=3, **aligner_options(cfg, "adversarial"))
    assert aligner.gradient_penalty == 1.0
    assert aligner_options(cfg, "none") == {}
    bad = copy.deepcopy(cfg)
    bad["alignment"]["adversarial"]["gradient_penalty"] = -1.0
    with pytest.raises(InputError, match="gradient_penalty"):
        validate_config(bad)
    assert cfg["alignment"]["labels"]["smoothing"] == 0.7 and cfg["alignment"]["labels"]["match_batches"] is True
