"""Where every result of a run lives (``results/{run}/...``): the Snakefile, the CLI and the stages build paths here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


PathLike = str | os.PathLike


# --------------------------------------------------------------------------- paths
def results_dir(config: dict[str, Any]) -> Path:
    """``results/{run}``: everything a run writes lives below it."""
    return Path("results") / config["run"]


def simulated_dir(config: dict[str, Any]) -> Path:
    """Where the demo simulator writes its (unpaired) domains and the truth."""
    return results_dir(config) / "simulated"


def scicar_dir(config: dict[str, Any]) -> Path:
    """Where the sci-CAR co-assay is converted into per-domain files and a truth table."""
    return results_dir(config) / "scicar"


def prepared_path(config: dict[str, Any], domain: str) -> Path:
    return results_dir(config) / "prepared" / f"{domain}.h5ad"


def _source_dir(config: dict[str, Any], kind: str) -> Path:
    return {"simulated": simulated_dir, "scicar": scicar_dir}[kind](config)


def domain_input(config: dict[str, Any], domain: str) -> Path:
    """The raw input of ``domain``: a generated file for 'simulated'/'scicar', else the path."""
    dom = config["domains"][domain]
    inp = dom["input"]
    if inp in ("simulated", "scicar"):
        if dom["modality"] == "image":
            return _source_dir(config, inp) / ("crops.h5ad" if simulates_crops(config) else "fields")
        return _source_dir(config, inp) / f"{dom['modality']}.h5ad"
    return Path(inp)


def simulates_crops(config: dict[str, Any]) -> bool:
    """True when the simulator writes ready crops (``simulate.images: crops``), not fields."""
    return config["simulate"].get("images", "fields") == "crops"


def annotations_input(config: dict[str, Any], domain: str) -> Path | None:
    """Annotation table joined onto segmented nuclei (image domains), if any."""
    ann = config["domains"][domain].get("annotations")
    if ann is None:
        return None
    if ann == "simulated":
        return simulated_dir(config) / "image_labels.tsv"
    return Path(ann)


def truth_path(config: dict[str, Any]) -> Path | None:
    """The truth table read by evaluation, or None when the config has none."""
    truth = config.get("truth")
    if truth is None:
        return None
    if truth in ("simulated", "scicar"):
        return _source_dir(config, truth) / "truth.tsv"
    return Path(truth)


def model_dir(config: dict[str, Any], method: str, seed: int | str) -> Path:
    return results_dir(config) / "models" / method / f"seed{seed}"


def checkpoint_dir(config: dict[str, Any], method: str, seed: int | str) -> Path:
    """Checkpoints live outside the declared outputs, so Snakemake never deletes them."""
    return results_dir(config) / "checkpoints" / method / f"seed{seed}"


def translated_path(config: dict[str, Any], method: str, seed: int | str, source: str, target: str) -> Path:
    return results_dir(config) / "translated" / method / f"seed{seed}" / f"{source}_to_{target}.h5ad"


def metrics_path(config: dict[str, Any], method: str, seed: int | str) -> Path:
    return results_dir(config) / "metrics" / method / f"seed{seed}.json"
