# Evaluation per model, then the comparison of all methods and seeds.


rule evaluate:
    # scores the latents and translations; the model itself is read only by plot_shift
    input:
        latents=lambda wc: model_files(wc)["latents"],
        prepared=expand(f"{RESULTS}/prepared/{{domain}}.h5ad", domain=DOMAINS),
        translated=[
            f"{RESULTS}/translated/{{method}}/seed{{seed}}/{s}_to_{t}.h5ad"
            for s, t in ALL_PAIRS
        ],
        truth=truth_input(),
    output:
        metrics=f"{RESULTS}/metrics/{{method}}/seed{{seed}}.json",
        scatters=[
            report(
                f"{RESULTS}/plots/evaluate/{{method}}/seed{{seed}}/{s}_to_{t}.png",
                caption="../report/scatter.rst",
                category="4. Evaluation",
                subcategory="{method}",
                labels={
                    "method": "{method}",
                    "seed": "{seed}",
                    "figure": f"{s} to {t}",
                },
            )
            for s, t in SCATTER_PAIRS
        ],
    log:
        f"{LOGS}/evaluate/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{method}}/seed{{seed}}.tsv"
    conda:
        "../../envs/cellbridge.yaml"
    params:
        settings=settings("evaluate"),
        pairs=ALL_PAIRS,
        scatter_pairs=SCATTER_PAIRS,
    script:
        "../scripts/evaluate.py"


rule plot_shift:
    input:
        unpack(lambda wc: model_files(wc)),
        prepared=expand(f"{RESULTS}/prepared/{{domain}}.h5ad", domain=DOMAINS),
    output:
        shift=report(
            f"{RESULTS}/plots/evaluate/{{method}}/seed{{seed}}/latent_shift.png",
            caption="../report/shift.rst",
            category="4. Evaluation",
            subcategory="{method}",
            labels={"method": "{method}", "seed": "{seed}", "figure": "latent shift"},
        ),
    log:
        f"{LOGS}/plot_shift/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_shift/{{method}}/seed{{seed}}.tsv"
    conda:
        "../../envs/cellbridge.yaml"
    params:
        settings=settings("plot_shift"),
    script:
        "../scripts/plot_shift.py"


rule plot_latents:
    # one job for all models: UMAP's numba compilation is paid once per run
    input:
        latents=expand(
            f"{RESULTS}/models/{{method}}/seed{{seed}}/{{domain}}.h5ad",
            method=METHODS,
            seed=SEEDS,
            domain=DOMAINS,
        ),
        truth=truth_input(),
    output:
        umaps=[
            report(
                f"{RESULTS}/plots/evaluate/{m}/seed{s}/latent_umap.png",
                caption="../report/umap.rst",
                category="4. Evaluation",
                subcategory=m,
                labels={"method": m, "seed": s, "figure": "joint latent"},
            )
            for m in METHODS
            for s in SEEDS
        ],
    log:
        f"{LOGS}/plot_latents.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_latents.tsv"
    conda:
        "../../envs/cellbridge.yaml"
    params:
        settings=settings("plot_latents"),
    script:
        "../scripts/plot_latents.py"


rule compare:
    input:
        metrics=expand(
            f"{RESULTS}/metrics/{{method}}/seed{{seed}}.json",
            method=METHODS,
            seed=SEEDS,
        ),
    output:
        table=report(
            f"{RESULTS}/comparison.tsv",
            caption="../report/comparison.rst",
            category="0. Comparison",
            labels={"table": "per method and seed"},
        ),
        summary=f"{RESULTS}/comparison_summary.tsv",
        figure=report(
            f"{RESULTS}/plots/comparison.png",
            caption="../report/comparison.rst",
            category="0. Comparison",
            labels={"figure": "methods"},
        ),
        # the report's front page (workflow/report/workflow.rst) includes this fragment
        page=f"{RESULTS}/report/results.html",
    log:
        f"{LOGS}/compare.log",
    conda:
        "../../envs/cellbridge.yaml"
    script:
        "../scripts/compare.py"
