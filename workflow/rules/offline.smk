# Stage 4: offline datasets collected with the trained SAC+GeMS agent (D4RL layout).

# Longest offline jobs first, so that the short ones fill the cores at the end: each method's registration
# holds its priority (slate_rl.offline.config, METHOD.priority; quick preset on 2 cores: DD 128 s, mostly
# acting; CQL 84; DT 79; IQL 38; TD3+BC 36; BC 26). The datasets the offline policies train on are
# collected before the others (priority 11 against 10).


# The reference policies of every offline result of an environment (the expert, z = 0, random latent actions on
# the test users), measured once; the expert and medium datasets' label checks read them too.
rule offline_references:
    input:
        unpack(shared_inputs),
    output:
        A.OFFLINE_REFERENCES,
    params:
        env_spec=lambda wildcards: env_spec_arg(config, wildcards.env),
        expert=expert_args(),
        test=TEST_ARGS,
        device=config["device"],
    log:
        "logs/offline/{env}/references.log",
    benchmark:
        "benchmarks/offline/{env}/references.tsv"
    threads: 1
    priority: 12
    conda:
        "../../envs/slate_rl.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=1,
    shell:
        "slate-rl offline-references --threads {threads} --env {wildcards.env} {params.env_spec} "
        "--embeddings-file {input.embeddings} --gems {input.gems} --expert {input.expert} {params.expert} "
        "{params.test} --device {params.device} --no-progress --output {output} > {log} 2>&1"


rule offline_dataset:
    input:
        unpack(dataset_inputs),
    output:
        data=A.DATASET,
        meta=A.DATASET_META,
    wildcard_constraints:
        quality="|".join(A.QUALITIES),
    params:
        env_spec=lambda wildcards: env_spec_arg(config, wildcards.env),
        behaviour=lambda wildcards, input: " ".join(
            f"--{name} {input[name]}" for name in ("behaviour", "replay", "logs", "references") if name in input.keys()
        ),
        options=collect_options(),
        device=config["device"],
    log:
        "logs/offline/{env}/{quality}.log",
    benchmark:
        "benchmarks/offline/{env}/{quality}.tsv"
    threads: 2
    priority: lambda wildcards: 11 if wildcards.quality in config["offline"]["qualities"] else 10
    conda:
        "../../envs/slate_rl.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    shell:
        "slate-rl collect --threads {threads} --env {wildcards.env} {params.env_spec} --embeddings-file {input.embeddings} "
        "--quality {wildcards.quality} --gems {input.gems} --expert {input.expert} {params.behaviour} "
        "{params.options} --device {params.device} --no-progress --output {output.data} > {log} 2>&1"


rule offline_mixture:
    input:
        unpack(mixture_inputs),
    output:
        data=A.DATASET,
        meta=A.DATASET_META,
    wildcard_constraints:
        quality="|".join(config["offline_data"]["mixtures"]) or "(?!)",
    params:
        env_spec=lambda wildcards: env_spec_arg(config, wildcards.env),
        mix=mixture_args,
        options=collect_options(),
        device=config["device"],
    log:
        "logs/offline/{env}/{quality}.log",
    benchmark:
        "benchmarks/offline/{env}/{quality}.tsv"
    threads: 1
    conda:
        "../../envs/slate_rl.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    shell:
        "slate-rl collect --threads {threads} --env {wildcards.env} {params.env_spec} --embeddings-file {input.embeddings} "
        "--quality {wildcards.quality} --gems {input.gems} --expert {input.expert} {params.mix} "
        "{params.options} --device {params.device} --no-progress --output {output.data} > {log} 2>&1"


# Stage 5: offline RL on the datasets, evaluated online on the fixed test users.


# One rule per seed group of pipeline.seed_jobs: with offline.seeds_per_job 1 (the default) the rule
# offline_policy, whose {seed} wildcard is its job's group of one (any seed); with n > 1, one rule per
# group of n consecutive seeds of offline.seeds (offline_policy_seeds_0_1, ...), declaring every seed's
# files. Every job runs `train-offline --seeds`, which trains the seeds one after another, each writing the
# bytes of a --seed run. Each seed's resume checkpoint (<policy>.last.ckpt) is no output, so a killed job
# resumes where each seed stopped.
for _seeds in seed_jobs(config, "offline"):

    rule:
        name:
            job_rule_name("offline_policy", _seeds)
        input:
            unpack(offline_inputs),
        output:
            policy=per_seed(A.POLICY, _seeds),
            results=per_seed(A.OFFLINE_RESULT, _seeds),
        params:
            seeds=job_seeds(_seeds),
            env_spec=lambda wildcards: env_spec_arg(config, wildcards.env),
            offline=section_args(config, "offline"),
            algo=lambda wildcards: section_args(config, wildcards.algo, prefix=f"{wildcards.algo}_"),
            expert=expert_args(),
            test=TEST_ARGS,
            device=config["device"],
            logger=config["logger"]["mode"],
            policy=lambda wildcards: seeds_template(A.POLICY, wildcards),
            results=lambda wildcards: seeds_template(A.OFFLINE_RESULT, wildcards),
        log:
            f"logs/offline/{{env}}/{{quality}}/{{algo}}/{job_label(_seeds)}.log",
        benchmark:
            f"benchmarks/offline/{{env}}/{{quality}}/{{algo}}/{job_label(_seeds)}.tsv"
        threads: 2
        priority: lambda wildcards: method_priority(wildcards.algo)
        conda:
            "../../envs/slate_rl.yaml"
        resources:
            mem_mb=8000,
            runtime=720 * len(_seeds or [0]),
            gpu=1,
        shell:
            "slate-rl train-offline --threads {threads} --env {wildcards.env} {params.env_spec} --embeddings-file {input.embeddings} "
            "--algo {wildcards.algo} --dataset {input.dataset} --gems {input.gems} --expert {input.expert} "
            "--seeds {params.seeds} --references {input.references} {params.offline} {params.algo} {params.expert} "
            "{params.test} "
            "--device {params.device} --logger-mode {params.logger} --no-progress "
            "--policy-output {params.policy} --results {params.results} > {log} 2>&1"


rule offline_aggregate:
    input:
        lambda wildcards: [
            A.path(A.OFFLINE_RESULT, env=wildcards.env, quality=config["offline"]["quality"], algo=wildcards.algo,
                   seed=seed)
            for seed in config["offline"]["seeds"]
        ],
    output:
        A.AGGREGATE_RESULT,
    log:
        "logs/offline/{env}/{algo}.aggregate.log",
    benchmark:
        "benchmarks/offline/{env}/{algo}.aggregate.tsv"
    threads: 1
    conda:
        "../../envs/slate_rl.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "slate-rl aggregate --threads {threads} --inputs {input} --output {output} > {log} 2>&1"
