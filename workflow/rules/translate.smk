# Translation: every domain's cells decoded into every domain (d -> d = reconstruction).


rule translate:
    input:
        unpack(lambda wc: model_files(wc)),
        prepared=expand(f"{RESULTS}/prepared/{{domain}}.h5ad", domain=DOMAINS),
        # galleries show the measured partner of each translated nucleus
        truth=truth_input() if IMAGE_PAIRS else [],
    output:
        translated=[
            f"{RESULTS}/translated/{{method}}/seed{{seed}}/{s}_to_{t}.h5ad"
            for s, t in ALL_PAIRS
        ],
        galleries=[
            report(
                f"{RESULTS}/plots/translate/{{method}}/seed{{seed}}/{s}_to_{t}.png",
                caption="../report/gallery.rst",
                category="3. Translation",
                subcategory="{method}",
                labels={"method": "{method}", "seed": "{seed}", "pair": f"{s} to {t}"},
            )
            for s, t in IMAGE_PAIRS
        ],
    log:
        f"{LOGS}/translate/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/translate/{{method}}/seed{{seed}}.tsv"
    conda:
        "../../envs/cellbridge.yaml"
    params:
        settings=settings("translate"),
        pairs=ALL_PAIRS,
        image_pairs=IMAGE_PAIRS,
    script:
        "../scripts/translate.py"
