# cellbridge: translate single cells between imaging and sequencing domains.
#
#   snakemake --cores 2                       # the built-in demo (config/config.yaml)
#   snakemake --cores 2 --configfile config/scicar.yaml
#
# Stages live in workflow/rules/ (one file per stage); paths and config validation in
# workflow/rules/common.smk; every step calls a function of the cellbridge package.
from snakemake.utils import min_version

min_version("9.0")


# The demo config is the default; a --configfile on the command line replaces it
# (rather than being merged into it, which would mix the demo's domains into yours).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# the report (snakemake --report) opens on the results page written by rule compare
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/inputs.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/translate.smk"
include: "workflow/rules/evaluate.smk"


localrules:
    all,
    compare,


rule all:
    default_target: True
    input:
        all_outputs(),
