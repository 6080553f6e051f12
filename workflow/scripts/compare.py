"""Rule compare: all methods and seeds in one table and one figure."""

import _bootstrap  # noqa: F401  (makes cellbridge importable, see _bootstrap.py)
from cellbridge import stages
from cellbridge._logging import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to_file(sm.log[0]):
    stages.compare(
        sm.config,
        list(sm.input.metrics),
        table=sm.output.table,
        summary=sm.output.summary,
        figure=sm.output.figure,
        results_page=sm.output.page,
    )
