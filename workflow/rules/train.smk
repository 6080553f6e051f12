# Training: one model per alignment method and seed (the 'none' baseline included).


rule train:
    input:
        prepared=expand(f"{RESULTS}/prepared/{{domain}}.h5ad", domain=DOMAINS),
        anchors=anchors_input(),
    output:
        model=f"{RESULTS}/models/{{method}}/seed{{seed}}/model.pt",
        config=f"{RESULTS}/models/{{method}}/seed{{seed}}/config.json",
        history=f"{RESULTS}/models/{{method}}/seed{{seed}}/history.tsv",
        latents=expand(
            f"{RESULTS}/models/{{{{method}}}}/seed{{{{seed}}}}/{{domain}}.h5ad",
            domain=DOMAINS,
        ),
        curves=report(
            f"{RESULTS}/models/{{method}}/seed{{seed}}/loss_curve.png",
            caption="../report/loss_curve.rst",
            category="2. Training",
            subcategory="{method}",
            labels={"method": "{method}", "seed": "{seed}", "figure": "loss curves"},
        ),
    log:
        f"{LOGS}/train/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{method}}/seed{{seed}}.tsv"
    conda:
        "../../envs/cellbridge.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=1 if config["training"]["device"].startswith("cuda") else 0,
    params:
        # outside the declared outputs: Snakemake never deletes them, so a rerun resumes
        checkpoints=lambda wc: str(stages.checkpoint_dir(config, wc.method, wc.seed)),
        settings=settings("train"),
    script:
        "../scripts/train.py"
