# Stage 3: online agents trained in the simulator, tested on the fixed test users.


rule online_agent:
    input:
        unpack(agent_inputs),
        embeddings=embeddings_of,
    output:
        best=A.agent_checkpoint("best"),
        medium=A.agent_checkpoint("medium"),
        # the final training state (replay buffer of "replay" datasets); the resume state while
        # training is last.work.ckpt, which survives a failed job
        last=A.agent_checkpoint("last"),
        results=A.ONLINE_RESULT,
    params:
        env_spec=lambda wildcards: env_spec_arg(config, wildcards.env),
        ranker=agent_input_args,
        online=config_args(config["online"]),
        build=f"--belief-table {config['agents']['belief_table']}",
        sac=config_args(config["sac"]),
        reinforce=config_args(config["reinforce"], prefix="reinforce_"),
        slateq=config_args(config["slateq"], prefix="slateq_"),
        test=TEST_ARGS,
        output_dir=lambda wildcards: A.path(A.AGENT_DIR, **wildcards),
        device=config["device"],
        logger=config["logger"]["mode"],
    log:
        "logs/agents/{env}/{agent_tag}/seed{seed}.log",
    benchmark:
        "benchmarks/agents/{env}/{agent_tag}/seed{seed}.tsv"
    threads: 2
    conda:
        "../../envs/slate_rl.yaml"
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=1,
    shell:
        "slate-rl train-agent --threads {threads} --env {wildcards.env} {params.env_spec} "
        "--embeddings-file {input.embeddings} --agent {wildcards.agent_tag} {params.ranker} --seed {wildcards.seed} "
        "{params.online} {params.build} {params.sac} "
        "{params.reinforce} {params.slateq} "
        "{params.test} --device {params.device} --logger-mode {params.logger} "
        "--output-dir {params.output_dir} "
        "--results {output.results} > {log} 2>&1"
