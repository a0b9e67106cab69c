# Stage 3: online agents trained in the simulator, tested on the fixed test users.


rule online_agent:
    input:
        unpack(agent_inputs),
        embeddings=embeddings_of,
    output:
        best="data/agents/{env}/{agent_tag}/seed{seed}/best.ckpt",
        medium="data/agents/{env}/{agent_tag}/seed{seed}/medium.ckpt",
        # the final training state (replay buffer of "replay" datasets); the resume state while
        # training is last.work.ckpt, which survives a failed job
        last="data/agents/{env}/{agent_tag}/seed{seed}/last.ckpt",
        results="results/{env}/online/{agent_tag}/seed{seed}.json",
    params:
        env_spec=lambda wildcards: env_spec_arg(config, wildcards.env),
        ranker=agent_input_args,
        online=config_args(config["online"]),
        build=f"--belief-table {config['agents']['belief_table']}",
        sac=config_args(config["sac"]),
        reinforce=config_args(config["reinforce"], prefix="reinforce_"),
        slateq=config_args(config["slateq"], prefix="slateq_"),
        test=f"--test-seed {config['evaluation']['test_seed']} --test-sessions {config['evaluation']['test_sessions']}",
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
        "--output-dir data/agents/{wildcards.env}/{wildcards.agent_tag}/seed{wildcards.seed} "
        "--results {output.results} > {log} 2>&1"
