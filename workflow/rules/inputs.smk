# Inputs that the workflow generates itself: the demo simulator and the sci-CAR import.


rule simulate:
    output:
        **simulated_outputs(),
    log:
        f"{LOGS}/simulate.log",
    benchmark:
        f"{RESULTS}/benchmarks/simulate.tsv"
    conda:
        "../../envs/cellbridge.yaml"
    params:
        settings=settings("simulate"),
    script:
        "../scripts/simulate.py"


rule import_scicar:
    input:
        config["scicar"]["path"],
    output:
        rna=f"{RESULTS}/scicar/rna.h5ad",
        atac=f"{RESULTS}/scicar/atac.h5ad",
        truth=f"{RESULTS}/scicar/truth.tsv",
    log:
        f"{LOGS}/import_scicar.log",
    conda:
        "../../envs/cellbridge.yaml"
    params:
        settings=settings("import_scicar"),
    script:
        "../scripts/import_scicar.py"
