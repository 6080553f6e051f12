"""Rule prepare: one domain's raw input -> prepared AnnData + QC plot."""

import _bootstrap  # noqa: F401  (makes cellbridge importable, see _bootstrap.py)
from cellbridge import stages
from cellbridge._logging import log_to_file

with log_to_file(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    stages.prepare_domain(
        snakemake.config,  # noqa: F821
        snakemake.wildcards.domain,  # noqa: F821
        output=snakemake.output.h5ad,  # noqa: F821
        plot=snakemake.output.plot,  # noqa: F821
        input_path=snakemake.params.source,  # noqa: F821
    )
