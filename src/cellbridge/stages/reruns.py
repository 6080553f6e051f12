"""Rerun triggers: the digest of exactly the config each stage reads (Snakemake ``params: settings=``)."""

from __future__ import annotations

import functools
from typing import Any

from .paths import simulates_crops
from .preparation import _demo_simulation
from .training import aligner_options, alignment_weight, uses_labels
from .translation import image_pairs


# --------------------------------------------------------------------------- rerun triggers
#: training options that change how a job runs, not what it computes: changing them
#: must not throw trained models away
_TRAINING_EXECUTION_KEYS = ("threads", "device", "checkpoint_every", "load_x")


@functools.cache
def _alignment_methods() -> tuple[str, ...]:
    """Every alignment method the schema knows (each may have its own ``alignment.<method>`` section)."""
    from ..config import load_schema

    return tuple(load_schema()["properties"]["alignment"]["properties"]["methods"]["items"]["enum"])


def _canonical(value: Any) -> Any:
    """JSON-able ``value`` with integral floats as ints, so ``1`` and ``1.0`` digest alike."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def settings_digest(settings: Any) -> str:
    """A short hash of JSON-able ``settings`` that is stable across processes and key order.

    Parameters
    ----------
    settings
        The configuration a job depends on (see :func:`stage_settings`).

    Returns
    -------
    str
        16 hex digits; the workflow passes it as a rule's ``params`` so Snakemake's
        ``params`` rerun trigger reruns the job (and everything downstream) when it changes.
    """
    import hashlib
    import json

    blob = json.dumps(_canonical(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_settings(
    config: dict[str, Any], stage: str, *, domain: str | None = None, method: str | None = None
) -> dict[str, Any]:
    """The part of the configuration that one job of ``stage`` reads, beyond its input files.

    Everything a stage function above takes from ``config`` is listed here and nothing
    else, so a config change reruns exactly the jobs whose result it changes (their
    downstream jobs follow through their newer inputs). Settings that only decide which
    jobs exist (``alignment.methods``, ``seeds``, domain names) change the job list instead.

    Parameters
    ----------
    config
        Validated configuration.
    stage
        ``simulate``, ``import_scicar``, ``prepare`` (needs ``domain``), ``train`` (needs
        ``method``), ``translate``, ``evaluate``, ``plot_shift`` or ``plot_latents``.
    domain, method
        The job's wildcards.
    """
    align = config["alignment"]
    if stage == "simulate":
        # the demo's settings as before the crops simulator existed: its files stay current
        return dict(config["simulate"]) if simulates_crops(config) else _demo_simulation(config["simulate"])
    if stage == "import_scicar":
        return {k: v for k, v in config["scicar"].items() if k != "path"}  # the path is the input
    if stage == "prepare":
        dom = config["domains"][domain]
        return {
            # the domain's 'model' entry is the autoencoder's architecture: training only
            "domain": {k: v for k, v in dom.items() if k != "model"},
            "preprocess": config["preprocess"][dom["modality"]],
            # images are labelled through 'annotations', sequencing domains by label_key
            "label_key": None if dom["modality"] == "image" else config["label_key"],
        }
    if stage == "train":
        options = aligner_options(config, method)
        use_labels = uses_labels(config, method)
        # alignment keys not named here (the schedule, the correspondence prior, any added
        # later) count for every method, 'none' included: a prior may apply to it too
        handled = {"methods", "baseline", "weight", "labels", "anchors", *_alignment_methods()}
        return {
            "model": config["model"],
            "architectures": {d: dom["model"] for d, dom in config["domains"].items()},
            "training": {k: v for k, v in config["training"].items() if k not in _TRAINING_EXECUTION_KEYS},
            "aligner": options,
            "align_weight": alignment_weight(config, method),
            "alignment": {k: v for k, v in align.items() if k not in handled},
            # labels are off for 'none' unless alignment.labels.baseline (uses_labels)
            "labels": dict(align["labels"], label_key=config["label_key"]) if use_labels else None,
            "anchors": align["anchors"],
        }
    if stage == "translate":
        # labels and truth only annotate the galleries of image targets
        out = {"label_key": config["label_key"], "truth": config["truth"]} if image_pairs(config) else {}
        # translation.morphology decides X of image targets (chunk_cells changes nothing written);
        # named only when off, so that results made before the option keep their digest
        if not config["translation"]["morphology"] and any(d["modality"] == "image" for d in config["domains"].values()):
            out["morphology"] = False
        return out
    if stage == "evaluate":
        evaluation = {k: v for k, v in config["evaluation"].items() if k != "umap_max_cells"}  # the figure's
        return {"evaluation": evaluation, "label_key": config["label_key"], "truth": config["truth"]}
    if stage == "plot_shift":
        return {"label_key": config["label_key"], "max_cells": config["evaluation"]["max_cells"],
                "sample_seed": config["evaluation"]["sample_seed"]}
    if stage == "plot_latents":
        return {"label_key": config["label_key"], "truth": config["truth"],
                "umap_max_cells": config["evaluation"]["umap_max_cells"]}
    raise ValueError(f"no settings are defined for stage {stage!r}")
