"""Rule plot_shift: one model's latent-shift figure (cells moved between groups, decoded in every domain)."""

import _bootstrap  # noqa: F401  (makes cellbridge importable, see _bootstrap.py)
from pathlib import Path

from cellbridge import stages
from cellbridge._logging import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to_file(sm.log[0]):
    cfg = sm.config
    stages.shift_figure(
        cfg,
        sm.wildcards.method,
        int(sm.wildcards.seed),
        prepared=dict(zip(list(cfg["domains"]), sm.input.prepared, strict=True)),
        model_path=Path(sm.input.model).parent,
        output=sm.output.shift,
    )
