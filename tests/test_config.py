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


@pytest.mark.parametrize("name", ["config.yaml", "scicar.yaml", "three_domains.yaml", "scale.yaml"])
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


# `snakemake --config` parses top-level numbers and booleans, but every value inside a
# mapping or list arrives as a string (YAML BaseLoader): these are the forms users write.
@pytest.mark.parametrize(
    "override,path,expected",
    [
        ({"alignment": {"weight": "0.5"}}, ("alignment", "weight"), 0.5),
        ({"training": {"max_epochs": "3"}}, ("training", "max_epochs"), 3),
        ({"training": {"lr": "1e-3"}}, ("training", "lr"), 1e-3),
        ({"alignment": {"wasserstein": {"unbalanced": "true"}}}, ("alignment", "wasserstein", "unbalanced"), True),
        ({"training": {"early_stopping_patience": "null"}}, ("training", "early_stopping_patience"), None),
        ({"truth": "null"}, ("truth",), None),
        ({"preprocess": {"image": {"threshold": "0.3"}}}, ("preprocess", "image", "threshold"), 0.3),
        ({"preprocess": {"image": {"threshold": "li"}}}, ("preprocess", "image", "threshold"), "li"),
        ({"alignment": {"mmd": {"scales": ["0.5", "2"]}}}, ("alignment", "mmd", "scales"), [0.5, 2]),
        ({"domains": {"rna": {"transpose": "false"}}}, ("domains", "rna", "transpose"), False),
        ({"label_key": "1"}, ("label_key",), "1"),  # the schema wants a string: kept
        ({"run": 2024}, ("run",), "2024"),  # `--config run=2024` arrives as an int
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "",
)
def test_command_line_strings_are_coerced_to_the_schema_types(override, path, expected):
    from snakemake.utils import update_config

    cfg = copy.deepcopy(MINIMAL)
    update_config(cfg, override)  # as snakemake merges --config into the config file
    value = validate_config(cfg)
    for key in path:
        value = value[key]
    assert value == expected and type(value) is type(expected)


def test_a_string_that_is_no_number_still_names_the_key():
    cfg = copy.deepcopy(MINIMAL)
    cfg["training"] = {"max_epochs": "three"}
    with pytest.raises(InputError, match="training.max_epochs: 'three' is not of type 'integer'"):
        validate_config(cfg)


def test_names_of_three_domains_with_to_are_fine_when_unambiguous():
    # colliding names are refused: see tests/test_bad_input.py
    cfg = {"truth": None, "domains": {n: {"modality": "rna", "input": f"{n}.h5ad"} for n in ("to", "tox", "x_to")}}
    validate_config(cfg)


def test_stage_settings_digest_is_stable_and_specific():
    from cellbridge.stages import settings_digest, stage_settings

    cfg = validate_config(copy.deepcopy(MINIMAL))
    reordered = validate_config(dict(reversed(list(copy.deepcopy(MINIMAL).items()))))
    digest = lambda c, *a, **k: settings_digest(stage_settings(c, *a, **k))  # noqa: E731
    assert digest(cfg, "train", method="mmd") == digest(reordered, "train", method="mmd")
    changed = copy.deepcopy(cfg)
    changed["alignment"]["weight"] = 1  # an int equal to the default 1.0: the same setting
    assert digest(changed, "train", method="mmd") == digest(cfg, "train", method="mmd")
    changed["alignment"]["mmd"] = {"scales": [1.0]}
    assert digest(changed, "train", method="mmd") != digest(cfg, "train", method="mmd")
    assert digest(changed, "train", method="wasserstein") == digest(cfg, "train", method="wasserstein")
    changed["domains"]["image"]["model"] = {"dropout": 0.2}  # the architecture: training, not preprocessing
    assert digest(changed, "prepare", domain="image") == digest(cfg, "prepare", domain="image")
    changed["training"]["threads"] = 7  # how a job runs, not what it computes
    assert digest(changed, "train", method="none") != digest(cfg, "train", method="none")  # the dropout
    changed["domains"]["image"]["model"] = copy.deepcopy(cfg["domains"]["image"]["model"])
    assert digest(changed, "train", method="none") == digest(cfg, "train", method="none")


def test_the_workflow_and_the_api_default_training_alike():
    # one set of training defaults: what a config leaves out is what CrossModalModel.train and
    # TrainingPlan default to (stages.TRAIN_OPTIONS is the one table between config and API)
    import inspect

    from cellbridge.model import CrossModalModel
    from cellbridge.stages import TRAIN_OPTIONS, alignment_weight, train_options
    from cellbridge.training import TrainingPlan

    cfg = validate_config(copy.deepcopy(MINIMAL))
    api = {k: p.default for k, p in inspect.signature(CrossModalModel.train).parameters.items()}
    from_config = train_options(cfg)
    assert set(from_config) == set(TRAIN_OPTIONS) and set(TRAIN_OPTIONS) <= set(api)
    assert from_config == {k: api[k] for k in TRAIN_OPTIONS}
    assert alignment_weight(cfg, "wasserstein") == api["align_weight"]
    plan = {f: getattr(TrainingPlan, f) for f in TrainingPlan.__dataclass_fields__}
    assert {k: v for k, v in api.items() if k in plan and k != "batch_size"} == {
        k: plan[k] for k in api if k in plan and k != "batch_size"
    }


def test_the_workflow_and_the_api_default_the_correspondence_prior_alike():
    # the workflow passes every alignment.correspondence key to the model; the API falls back
    # on cellbridge.geometry's constants: a default changed in one place must change in both
    from cellbridge import geometry as G

    prior = validate_config(copy.deepcopy(MINIMAL))["alignment"]["correspondence"]
    api = {"n_landmarks": G.N_LANDMARKS, "k_grid": list(G.K_GRID), "epsilon": G.EPSILON, "max_cells": G.MAX_CELLS,
           "n_restarts": G.N_RESTARTS, "starts": list(G.DEFAULT_STARTS), "scalings": list(G.DEFAULT_SCALINGS),
           "multiscale": G.MULTISCALE}
    assert {k: prior[k] for k in api} == api
