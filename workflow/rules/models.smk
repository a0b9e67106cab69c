# Stage 2: MF item embeddings and the GeMS VAE, pre-trained on the logged sessions.


rule mf_embeddings:
    input:
        logs=A.LOGS,
    output:
        table=A.MF,
        metrics=A.MF_METRICS,
    params:
        options=lambda wildcards: config_args(config["mf"]),
        device=config["device"],
        logger=config["logger"]["mode"],
    log:
        "logs/mf/{env}.log",
    benchmark:
        "benchmarks/mf/{env}.tsv"
    threads: 2
    conda:
        "../../envs/slate_rl.yaml"
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "slate-rl train-mf --threads {threads} --logs {input.logs} {params.options} --device {params.device} "
        "--logger-mode {params.logger} --output {output.table} --metrics {output.metrics} > {log} 2>&1"


rule gems:
    input:
        logs=A.LOGS,
        item_table=gems_item_table,
    output:
        ckpt=A.GEMS,
        metrics=A.GEMS_METRICS,
    params:
        options=lambda wildcards: config_args(gems_config(config, wildcards.gems_tag)),
        item_table=lambda wildcards, input: f"--item-embeddings {input.item_table}" if input.item_table else "",
        device=config["device"],
        logger=config["logger"]["mode"],
    log:
        "logs/gems/{env}/{gems_tag}.log",
    benchmark:
        "benchmarks/gems/{env}/{gems_tag}.tsv"
    threads: 2
    priority: 30
    conda:
        "../../envs/slate_rl.yaml"
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=1,
    shell:
        "slate-rl pretrain-gems --threads {threads} --logs {input.logs} {params.item_table} {params.options} --device {params.device} "
        "--logger-mode {params.logger} --output {output.ckpt} --metrics {output.metrics} > {log} 2>&1"
