# Stage 1: item tables, logged sessions of the epsilon-greedy oracle, reference-policy returns.
#
# Priorities: the chain logs (40) -> GeMS (30) -> online agents (20) -> offline datasets (10) runs before the
# jobs beside it (MF, reference policies, offline policies: 0), which fill the cores the chain leaves free; on
# a 2-core machine this took minutes off `make quick` (reference policies and MF had run first).


rule item_embeddings:
    output:
        A.EMBEDDINGS,
    params:
        seed=lambda wildcards: config["embeddings"]["seeds"][wildcards.kind],
        power=lambda wildcards: config["embeddings"]["power"][wildcards.kind],
        source=lambda wildcards: embeddings_source_arg(config, wildcards.kind),
    log:
        "logs/embeddings/{kind}.log",
    benchmark:
        "benchmarks/embeddings/{kind}.tsv"
    threads: 1
    conda:
        "../../envs/slate_rl.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "slate-rl make-embeddings --threads {threads} --kind {wildcards.kind} --seed {params.seed} "
        "--power {params.power} {params.source} "
        "--output {output} > {log} 2>&1"


rule logged_sessions:
    input:
        embeddings=embeddings_of,
    output:
        A.LOGS,
    params:
        env_spec=lambda wildcards: env_spec_arg(config, wildcards.env),
        sessions=config["logs"]["sessions"],
        epsilon=config["logs"]["epsilon"],
        seed=config["logs"]["seed"],
        batch_size=config["logs"]["batch_size"],
        device=config["device"],
    log:
        "logs/logs/{env}.log",
    benchmark:
        "benchmarks/logs/{env}.tsv"
    threads: 2
    priority: 40
    conda:
        "../../envs/slate_rl.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "slate-rl generate-logs --threads {threads} --env {wildcards.env} {params.env_spec} --embeddings-file {input.embeddings} "
        "--sessions {params.sessions} --epsilon {params.epsilon} --seed {params.seed} "
        "--batch-size {params.batch_size} --device {params.device} --output {output} > {log} 2>&1"


rule reference_policy:
    input:
        embeddings=embeddings_of,
    output:
        A.REFERENCE_RESULT,
    params:
        env_spec=lambda wildcards: env_spec_arg(config, wildcards.env),
        sessions=config["evaluation"]["test_sessions"],
        seed=config["evaluation"]["test_seed"],
        epsilon=config["evaluation"]["epsilon"],
        device=config["device"],
    log:
        "logs/reference/{env}/{policy}.log",
    benchmark:
        "benchmarks/reference/{env}/{policy}.tsv"
    threads: 1
    conda:
        "../../envs/slate_rl.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "slate-rl evaluate-policy --threads {threads} --env {wildcards.env} {params.env_spec} --embeddings-file {input.embeddings} "
        "--policy {wildcards.policy} --epsilon {params.epsilon} --sessions {params.sessions} "
        "--seed {params.seed} --device {params.device} --output {output} > {log} 2>&1"
