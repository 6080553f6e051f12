"""One function per workflow step, called by both the CLI and the Snakemake scripts.

Each stage takes the validated config dict (see :mod:`cellbridge.config`) plus the
paths it writes, so a rule and the equivalent ``cellbridge <stage>`` command run the
very same code. Paths of intermediate results are built here too (``results/{run}/…``),
so the Snakefile and the CLI cannot disagree about where a file lives.

One module per part of the workflow:

* :mod:`.paths` -- where every result of a run lives;
* :mod:`.preparation` -- ``simulate``, ``import_scicar``, ``prepare_domain`` and
  :func:`read_prepared` (prepared domains read back as each stage needs them);
* :mod:`.training` -- ``train`` and the config's methods, aligner options and weights;
* :mod:`.translation` -- ``translate`` (chunked, atomic), galleries, new cells;
* :mod:`.scoring` -- ``evaluate``, ``plot_shift``, ``plot_latents``, ``compare``;
* :mod:`.reruns` -- the digest of exactly the config each stage reads.
"""

from .paths import (
    PathLike,
    annotations_input,
    checkpoint_dir,
    domain_input,
    metrics_path,
    model_dir,
    prepared_path,
    results_dir,
    scicar_dir,
    simulated_dir,
    simulates_crops,
    translated_path,
    truth_path,
)
from .preparation import (
    import_scicar,
    prepare_domain,
    read_prepared,
    simulate,
    training_layers,
)
from .reruns import settings_digest, stage_settings
from .scoring import (
    BASELINES,
    comparison_tables,
    compare,
    evaluate,
    headline_metrics,
    plot_latents,
    plot_shift,
    scatter_pairs,
    shift_figure,
    vector_pairs,
)
from .training import (
    TRAIN_OPTIONS,
    aligner_options,
    alignment_weight,
    build_model,
    methods,
    train,
    train_options,
    uses_labels,
)
from .translation import (
    GALLERY_MAX_CELLS,
    domain_pairs,
    generate_cells,
    image_pairs,
    plot_gallery,
    translate,
    translate_in_chunks,
    translate_query,
)

__all__ = [
    "BASELINES",
    "GALLERY_MAX_CELLS",
    "TRAIN_OPTIONS",
    "PathLike",
    "aligner_options",
    "alignment_weight",
    "annotations_input",
    "build_model",
    "checkpoint_dir",
    "compare",
    "comparison_tables",
    "domain_input",
    "domain_pairs",
    "evaluate",
    "generate_cells",
    "headline_metrics",
    "image_pairs",
    "import_scicar",
    "methods",
    "metrics_path",
    "model_dir",
    "plot_gallery",
    "plot_latents",
    "plot_shift",
    "prepare_domain",
    "prepared_path",
    "read_prepared",
    "results_dir",
    "scatter_pairs",
    "scicar_dir",
    "settings_digest",
    "shift_figure",
    "simulate",
    "simulated_dir",
    "simulates_crops",
    "stage_settings",
    "train",
    "train_options",
    "training_layers",
    "translate",
    "translate_in_chunks",
    "translate_query",
    "translated_path",
    "truth_path",
    "uses_labels",
    "vector_pairs",
]
