"""Rule evaluate: metrics of one model on held-out cells and the translation scatter plots."""

import _bootstrap  # noqa: F401  (makes cellbridge importable, see _bootstrap.py)

from cellbridge import stages
from cellbridge._logging import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to_file(sm.log[0]):
    cfg = sm.config
    domains = list(cfg["domains"])
    stages.evaluate(
        cfg,
        sm.wildcards.method,
        int(sm.wildcards.seed),
        latents=dict(zip(domains, sm.input.latents, strict=True)),
        translated=dict(zip(sm.params.pairs, sm.input.translated, strict=True)),
        prepared=dict(zip(domains, sm.input.prepared, strict=True)),
        output=sm.output.metrics,
        scatters=dict(zip(sm.params.scatter_pairs, sm.output.scatters, strict=True)),
    )
