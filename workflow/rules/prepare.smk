# Preprocessing: one job per domain, raw input -> prepared AnnData (docs/design.md).


rule prepare:
    input:
        unpack(prepare_inputs),
    output:
        h5ad=f"{RESULTS}/prepared/{{domain}}.h5ad",
        plot=report(
            f"{RESULTS}/plots/prepare/{{domain}}.png",
            caption="../report/prepare.rst",
            category="1. Preprocessing",
            subcategory="{domain}",
        ),
    log:
        f"{LOGS}/prepare/{{domain}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare/{{domain}}.tsv"
    conda:
        "../../envs/cellbridge.yaml"
    params:
        source=lambda wc: str(stages.domain_input(config, wc.domain)),
        settings=settings("prepare"),
    script:
        "../scripts/prepare.py"
