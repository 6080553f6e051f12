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


def coerce_config(config: dict[str, Any], schema: dict | None = None) -> dict[str, Any]:
    """Give string values the type the schema asks for, in place, before validation.

    ``snakemake --config`` parses a top-level value as a number or boolean, but every
    value inside a mapping (``'training={max_epochs: 3}'``) and a list arrives as a
    string. A string is replaced by its YAML reading (number, boolean, null) where the
    schema rejects the string but accepts that reading; a string the schema accepts is
    kept, except ``null``/``~`` where null is allowed (a path called "null" is far less
    likely than a user switching an option off). Top-level numbers where the schema wants
    a string (``run=2024``) become that string.

    Parameters
    ----------
    config
        The configuration as loaded and merged with command-line overrides.
    schema
        The schema (default: :func:`load_schema`).

    Returns
    -------
    dict
        ``config``, coerced in place.
    """
    root = schema if schema is not None else load_schema()
    validator = Draft202012Validator(root)

    def resolve(sub: Any) -> dict:
        # local references only ("#/$defs/name"), as the shipped schema uses
        while isinstance(sub, dict) and "$ref" in sub:
            target: Any = root
            for part in sub["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            sub = {**target, **{k: v for k, v in sub.items() if k != "$ref"}}
        return sub if isinstance(sub, dict) else {}

    def accepts(sub: dict, value: Any) -> bool:
        return validator.evolve(schema=sub).is_valid(value)

    def coerce(value: Any, sub: Any) -> Any:
        sub = resolve(sub)
        if not sub:
            return value
        if isinstance(value, dict):
            props = sub.get("properties", {})
            extra = sub.get("additionalProperties")
            for key in list(value):
                child = props.get(key, extra if isinstance(extra, dict) else None)
                if child is not None:
                    value[key] = coerce(value[key], child)
            return value
        if isinstance(value, list) and isinstance(sub.get("items"), dict):
            return [coerce(v, sub["items"]) for v in value]
        if isinstance(value, str):
            try:
                reading = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            if isinstance(reading, str):
                try:  # YAML 1.1 reads "1e-3" (no dot) as a string
                    reading = float(value)
                except ValueError:
                    return value
            if isinstance(reading, dict | list):
                return value
            if reading is None and accepts(sub, None):
                return None
            if not accepts(sub, value) and accepts(sub, reading):
                return reading
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not accepts(sub, value) and accepts(sub, str(value)):
                return str(value)
        return value

    return coerce(config, root)


def validate_config(config: dict[str, Any], *, source: str | os.PathLike | None = None) -> dict:
    """Coerce, then validate ``config`` in place against the schema, filling defaults.

    Raises
    ------
    InputError
        Naming ``source`` (the config file), the key and the allowed values.
    """
    coerce_config(config)
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


def check_names(config: dict[str, Any], *, source: str | os.PathLike | None = None) -> None:
    """Run and domain names must give distinct paths inside ``results/{run}/``.

    Raises
    ------
    InputError
        When ``run`` is made of dots only (``.``/``..`` would write beside or into
        ``results/`` itself), when two domain names differ only by case (one file on
        case-insensitive file systems), or when two domain pairs give the same
        ``{source}_to_{target}`` file name (e.g. domains ``x`` and ``x_to_x``: one
        translation would overwrite the other).
    """
    where = source or "config"
    run = str(config["run"])
    if set(run) <= {"."}:
        raise InputError(where, f"run: {run!r} is not a folder name results/ can hold; use letters, digits, _ or -")
    names = list(config["domains"])
    folded: dict[str, str] = {}
    for name in names:
        other = folded.setdefault(name.lower(), name)
        if other != name:
            raise InputError(where, f"domains: {other!r} and {name!r} differ only by case; their files would collide")
    pairs: dict[str, tuple[str, str]] = {}
    for s in names:
        for t in names:
            other_pair = pairs.setdefault(f"{s}_to_{t}", (s, t))
            if other_pair != (s, t):
                raise InputError(
                    where,
                    f"domains: the translations {other_pair[0]} -> {other_pair[1]} and {s} -> {t} would both be "
                    f"written to {s}_to_{t}.h5ad; rename one of these domains",
                )


def check_config(config: dict[str, Any], *, source: str | os.PathLike | None = None) -> None:
    """Cross-field checks the schema cannot express."""
    where = source or "config"
    check_names(config, source=source)
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
        if inp == "simulated" and config["simulate"].get("images") == "crops":
            if mod == "atac":
                raise InputError(
                    where, f"domains.{name}: simulate.images 'crops' (the large-data simulator) writes no ATAC; "
                    "drop this domain or use simulate.images: fields",
                )
            if dom.get("annotations") is not None:
                raise InputError(
                    where, f"domains.{name}: simulated crops carry their labels in obs; drop 'annotations' "
                    "(it joins labels to nuclei segmented from fields)",
                )
        if dom.get("annotations") and mod != "image":
            raise InputError(where, f"domains.{name}: 'annotations' applies to image domains only")
    truth = config.get("truth")
    inputs = {d["input"] for d in config["domains"].values()}
    if truth in ("simulated", "scicar") and truth not in inputs:
        raise InputError(
            where, f"truth: '{truth}' needs at least one domain whose input is '{truth}'"
        )
    if truth not in (None, "simulated", "scicar"):
        from .truth import read_truth

        # only evaluation reads it, after training: a wrong file must stop the run at its start
        read_truth(truth, nrows=100)


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
