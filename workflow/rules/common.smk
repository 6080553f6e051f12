# Config validation and path helpers shared by every rule.
import sys
from pathlib import Path

from snakemake.utils import validate

# The workflow's helpers use the package; jobs find it via workflow/scripts/_bootstrap.py.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from cellbridge import stages  # noqa: E402
from cellbridge.config import check_config, normalize_config  # noqa: E402
from cellbridge.config import coerce_config  # noqa: E402

# --config values inside mappings and lists arrive as strings ('training={max_epochs: 3}')
coerce_config(config)
validate(config, "../schemas/config.schema.yaml")
check_config(config, source="config")
normalize_config(config)

RESULTS = str(stages.results_dir(config))
DOMAINS = list(config["domains"])
LOGS = f"{RESULTS}/logs"
METHODS = stages.methods(config)
SEEDS = [str(s) for s in config["seeds"]]
# pair lists: the rules' file lists are built from them and the jobs get them as params
ALL_PAIRS = stages.domain_pairs(config)  # d -> d: reconstruction
IMAGE_PAIRS = stages.image_pairs(config)
SCATTER_PAIRS = stages.scatter_pairs(config)

_GLOB_CHARS = set("*?[")


wildcard_constraints:
    domain="|".join(DOMAINS),
    method="|".join(METHODS),
    seed=r"\d+",


def uses_input(kind):
    """True when some domain (or the truth table) comes from 'simulated' or 'scicar'."""
    return kind == config.get("truth") or any(
        d["input"] == kind for d in config["domains"].values()
    )


def simulated_outputs():
    """The simulate rule's files: demo fields (+ ATAC when asked) or, at scale, ready crops."""
    out = {
        "rna": f"{RESULTS}/simulated/rna.h5ad",
        "truth": f"{RESULTS}/simulated/truth.tsv",
    }
    if stages.simulates_crops(config):
        out["crops"] = f"{RESULTS}/simulated/crops.h5ad"
        return out
    if config["simulate"]["atac"]:
        out["atac"] = f"{RESULTS}/simulated/atac.h5ad"
    out["image_labels"] = f"{RESULTS}/simulated/image_labels.tsv"
    out["fields"] = directory(f"{RESULTS}/simulated/fields")
    out["masks"] = directory(f"{RESULTS}/simulated/masks")
    return out


def raw_input_files(domain):
    """Files Snakemake must see for a domain's raw input (a glob expands here)."""
    src = str(stages.domain_input(config, domain))
    # an existing path is taken literally (a field named "plate[1].tif"), as prepare does
    if _GLOB_CHARS & set(src) and not Path(src).exists():
        import glob

        return sorted(glob.glob(src))
    return [src]


def prepare_inputs(wildcards):
    files = {"raw": raw_input_files(wildcards.domain)}
    ann = stages.annotations_input(config, wildcards.domain)
    if ann is not None:
        files["annotations"] = str(ann)
    # a label table (not an obs column name): edits to it must redo the preparation
    labels = config["domains"][wildcards.domain].get("labels")
    if labels is not None and Path(labels).is_file():
        files["labels"] = labels
    return files


def model_files(wildcards):
    """The trained model and its per-domain latents, for translate and evaluate."""
    base = f"{RESULTS}/models/{wildcards.method}/seed{wildcards.seed}"
    return {
        "model": f"{base}/model.pt",
        "model_config": f"{base}/config.json",
        "latents": [f"{base}/{d}.h5ad" for d in DOMAINS],
    }


def settings(stage):
    """A ``params:`` value: the digest of the config a ``stage`` job reads.

    Snakemake's ``params`` rerun trigger then reruns exactly the jobs whose settings
    changed, and their downstream jobs (see ``stages.stage_settings``).
    """

    def digest(wildcards):
        return stages.settings_digest(
            stages.stage_settings(
                config,
                stage,
                domain=getattr(wildcards, "domain", None),
                method=getattr(wildcards, "method", None),
            )
        )

    return digest


def anchors_input():
    table = config["alignment"]["anchors"]["table"]
    return [] if table is None else [table]


def truth_input():
    path = stages.truth_path(config)
    return [] if path is None else [str(path)]


def all_outputs():
    out = [str(stages.prepared_path(config, d)) for d in DOMAINS]
    out += [f"{RESULTS}/plots/prepare/{d}.png" for d in DOMAINS]
    out += [f"{RESULTS}/comparison.tsv", f"{RESULTS}/plots/comparison.png"]
    out += [
        f"{RESULTS}/plots/evaluate/{m}/seed{s}/{figure}.png"
        for m in METHODS
        for s in SEEDS
        for figure in ("latent_umap", "latent_shift")
    ]
    return out
