"""Rule simulate: the paired demo data set, written as unpaired domains + truth."""

import _bootstrap  # noqa: F401  (makes cellbridge importable, see _bootstrap.py)
from pathlib import Path

from cellbridge import stages
from cellbridge._logging import log_to_file

with log_to_file(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    stages.simulate(snakemake.config, out_dir=Path(snakemake.output.truth).parent)  # noqa: F821
