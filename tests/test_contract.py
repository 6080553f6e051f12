"""The prepared-domain contract has one home (cellbridge.contract) and its converter keeps values."""

import ast
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellbridge import InputError, __version__
from cellbridge.contract import (
    LATENT_KEY,
    MODALITIES,
    check_crop_side,
    check_split,
    finalize_domain,
    jsonable,
    validate_domain,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "cellbridge"


def test_jsonable_gives_values_json_and_h5ad_both_keep(tmp_path):
    params = {
        "path": Path("data/in.h5ad"),
        "n": np.int64(3),
        "x": np.float32(0.5),
        "window": (24, 24),
        "channels": np.array([0, 2]),
        "nested": {1: {"flag": np.bool_(True)}},
        "threshold": None,
        "annotations": pd.DataFrame({"a": range(4)}),
    }
    out = jsonable(params)
    assert out == {
        "path": "data/in.h5ad",
        "n": 3,
        "x": 0.5,
        "window": [24, 24],
        "channels": [0, 2],
        "nested": {"1": {"flag": True}},
        "threshold": None,
        "annotations": "DataFrame(4 rows)",
    }
    assert json.loads(json.dumps(out)) == out
    adata = ad.AnnData(np.zeros((3, 2), dtype=np.float32))
    finalize_domain(adata, domain="d", modality="features", label_key=None, params=params, source=params["path"])
    adata.write_h5ad(tmp_path / "d.h5ad")
    back = ad.read_h5ad(tmp_path / "d.h5ad").uns["cellbridge"]
    assert back["params"]["threshold"] is None and back["params"]["n"] == 3
    assert back["source"] == "data/in.h5ad" and back["version"] == __version__
    assert validate_domain(ad.read_h5ad(tmp_path / "d.h5ad"), "d") == "features"


def test_crop_sides_and_split_values_are_checked():
    assert check_crop_side(16) == 16
    for bad in (4, 12, 0):
        with pytest.raises(ValueError, match="power-of-two"):
            check_crop_side(bad)
    check_split(pd.Series(["train", "test"]), path="x.h5ad")
    with pytest.raises(InputError, match=r"x\.h5ad.*'Test'"):
        check_split(pd.Series(["train", "Test"]), path="x.h5ad")


def _assigned_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


@pytest.mark.parametrize(
    "name,owner",
    [("LATENT_KEY", "contract.py"), ("SPLIT_KEY", "contract.py"), ("SPLIT_VALUES", "contract.py"),
     # the modality lists are the registry's (the contract names them too, imported)
     ("MODALITIES", "modalities.py"), ("COUNT_MODALITIES", "modalities.py"), ("LIKELIHOODS_BY_MODALITY", "nn/likelihoods.py")],
)
def test_contract_names_are_defined_in_one_module(name, owner):
    owners = [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if name in _assigned_names(ast.parse(path.read_text()))
    ]
    assert owners == [owner]


def _code_strings(tree: ast.AST) -> set[str]:
    """String constants of the code, docstrings left out."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }


def test_the_latent_key_is_spelled_only_in_the_contract():
    # a module spelling the key itself would drift from the contract
    spelled = [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "contract.py" and LATENT_KEY in _code_strings(ast.parse(path.read_text()))
    ]
    assert spelled == []


def test_the_contract_imports_no_other_layer():
    tree = ast.parse((SRC / "contract.py").read_text())
    local = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
    assert local <= {"_io", "modalities"}
    # and the registry imports nothing of cellbridge (preparers are imported by name when used)
    assert _local_imports(SRC / "modalities.py") == set()


def _local_imports(path: Path) -> set[str]:
    """Package-relative modules a source file imports (``from ..preprocess import x`` -> ``preprocess``)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(SRC).parent.parts
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            out.add(".".join((*base, *(node.module or "").split("."))).strip("."))
    return out


@pytest.mark.parametrize("lower", ["nn", "data.py", "truth.py", "contract.py", "modalities.py", "_io.py"])
def test_lower_layers_do_not_import_preprocessing_or_plotting(lower):
    # the one-way order of docs/design.md: model building blocks never reach up into
    # the stage code that prepares domains or draws figures
    files = sorted((SRC / lower).rglob("*.py")) if (SRC / lower).is_dir() else [SRC / lower]
    upward = {
        str(path.relative_to(SRC)): sorted(m for m in _local_imports(path) if m.split(".")[0] in {"preprocess", "plotting"})
        for path in files
    }
    assert {k: v for k, v in upward.items() if v} == {}
