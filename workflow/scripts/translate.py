"""Rule translate: every domain into every domain, plus galleries for image targets."""

import _bootstrap  # noqa: F401  (makes cellbridge importable, see _bootstrap.py)
from pathlib import Path

from cellbridge import stages
from cellbridge._logging import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to_file(sm.log[0]):
    cfg = sm.config
    domains = list(cfg["domains"])
    stages.translate(
        cfg,
        sm.wildcards.method,
        int(sm.wildcards.seed),
        model_path=Path(sm.input.model).parent,
        prepared=dict(zip(domains, sm.input.prepared, strict=True)),
        outputs=dict(zip(sm.params.pairs, sm.output.translated, strict=True)),
        galleries=dict(zip(sm.params.image_pairs, sm.output.galleries, strict=True)),
    )
