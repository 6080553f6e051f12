"""Load and validate workflow configurations.

The JSON schema in ``schemas/config.schema.yaml`` is the single description of every
option: the Snakefile validates against it with :func:`snakemake.utils.validate`
and the CLI with :func:`load_config`; both fill in the schema's defaults. On top of
the schema, :func:`check_config` checks what a schema cannot express (for example
that a domain taken from the simulator is a modality the simulator produces).
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import Draft202012Validator, validators

from ._io import InputError

#: modalities the demo simulator writes (atac only when ``simulate.atac`` is true)
SIMULATED_MODALITIES = ("rna", "atac", "image")
#: modalities the sci-CAR loader yields
SCICAR_MODALITIES = ("rna", "atac")


def schema_path() -> Path:
    """Path of the configuration schema shipped with the package."""
    return Path(str(resources.files("cellbridge") / "schemas" / "config.schema.yaml"))


def load_schema() -> dict:
    """The configuration JSON schema as a dict."""
    return yaml.safe_load(schema_path().read_text())


def _validator_filling_defaults():
    # As snakemake.utils.validate does: fill defaults while validating, so nested
    # objects with ``default: {}`` are created and then filled in turn.
    base = Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(base, {"properties": set_defaults})


def format_validation_error(error: jsonschema.ValidationError) -> str:
    """Name the offending key (dotted path) and what is allowed there."""
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    allowed = ""
    if error.validator == "enum":
        allowed = f"; allowed values: {', '.join(map(str, error.validator_value))}"
    elif error.validator == "additionalProperties" and isinstance(error.schema, dict):
        known = sorted(error.schema.get("properties", {}))
        if known:
            allowed = f"; allowed keys: {', '.join(known)}"
    return f"{key}: {error.message}{allowed}"


def validate_config(config: dict[str, Any], *, source: str | os.PathLike | None = None) -> dict:
    """Validate ``config`` in place against the schema, filling defaults.

    Raises
    ------
    InputError
        Naming ``source`` (the config file), the key and the allowed values.
    """
    validator = _validator_filling_defaults()(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        problems = "; ".join(format_validation_error(e) for e in errors[:5])
        raise InputError(source or "config", f"invalid configuration: {problems}")
    check_config(config, source=source)
    return normalize_config(config)


def normalize_config(config: dict[str, Any]) -> dict[str, Any]:
    """Canonical types after validation (seeds given on the command line arrive as strings)."""
    config["seeds"] = [int(s) for s in config["seeds"]]
    if len(set(config["seeds"])) != len(config["seeds"]):
        raise InputError("config", f"seeds: duplicate values in {config['seeds']}")
    return config


def check_config(config: dict[str, Any], *, source: str | os.PathLike | None = None) -> None:
    """Cross-field checks the schema cannot express."""
    where = source or "config"
    for name, dom in config["domains"].items():
        mod, inp = dom["modality"], dom["input"]
        if inp == "simulated":
            allowed = [m for m in SIMULATED_MODALITIES if m != "atac" or config["simulate"]["atac"]]
            if mod not in allowed:
                raise InputError(
                    where,
                    f"domains.{name}: the simulator produces no '{mod}' data "
                    f"(it simulates: {', '.join(allowed)})",
                )
        elif inp == "scicar" and mod not in SCICAR_MODALITIES:
            raise InputError(
                where, f"domains.{name}: sci-CAR holds {', '.join(SCICAR_MODALITIES)}, not '{mod}'"
            )
        if dom.get("annotations") and mod != "image":
            raise InputError(where, f"domains.{name}: 'annotations' applies to image domains only")
    truth = config.get("truth")
    inputs = {d["input"] for d in config["domains"].values()}
    if truth in ("simulated", "scicar") and truth not in inputs:
        raise InputError(
            where, f"truth: '{truth}' needs at least one domain whose input is '{truth}'"
        )


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file, validate it and fill defaults."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "config file does not exist")
    try:
        config = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(p, f"not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise InputError(p, "a config file must hold a mapping of keys to values")
    return validate_config(config, source=p)
