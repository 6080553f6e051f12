"""Rule train: one model per alignment method and seed; resumes from its checkpoint."""

import _bootstrap  # noqa: F401  (makes cellbridge importable, see _bootstrap.py)
from pathlib import Path

from cellbridge import stages
from cellbridge._logging import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to_file(sm.log[0]):
    domains = list(sm.config["domains"])
    stages.train(
        sm.config,
        sm.wildcards.method,
        int(sm.wildcards.seed),
        prepared=dict(zip(domains, sm.input.prepared, strict=True)),
        out_dir=Path(sm.output.model).parent,
        checkpoints=sm.params.checkpoints,
    )
