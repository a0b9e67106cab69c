# Stage 3: online agents trained in the simulator, tested on the fixed test users.
#
# One rule per seed group of pipeline.seed_jobs: with online.seeds_per_job 1 (the default) the rule
# online_agent, whose {seed} wildcard is its job's group of one (any seed); with n > 1, one rule per
# group of n consecutive seeds of agents.seeds (online_agent_seeds_0_1, ...), declaring every seed's
# outputs. Every job runs `train-agent --seeds`, which writes for each seed the files of a --seed run
# (slate_rl/stages/train_agent.py): a plain SAC agent's seeds train together, the others' one after
# another. Each seed's resume state (last.work.ckpt) is no output, so a killed job resumes.
for _seeds in seed_jobs(config, "online"):

    rule:
        name:
            job_rule_name("online_agent", _seeds)
        input:
            unpack(agent_inputs),
            embeddings=embeddings_of,
        output:
            best=per_seed(A.agent_checkpoint("best"), _seeds),
            medium=per_seed(A.agent_checkpoint("medium"), _seeds),
            # the final training state (replay buffer of "replay" datasets); the resume state while
            # training is last.work.ckpt, which survives a failed job
            last=per_seed(A.agent_checkpoint("last"), _seeds),
            results=per_seed(A.ONLINE_RESULT, _seeds),
        params:
            seeds=job_seeds(_seeds),
            env_spec=lambda wildcards: env_spec_arg(config, wildcards.env),
            ranker=agent_input_args,
            online=section_args(config, "online"),
            build=f"--belief-table {config['agents']['belief_table']}",
            # its own agent's section only: editing another agent's settings does not rerun this job
            agent=lambda wildcards: agent_section_args(config, wildcards.agent_tag),
            test=TEST_ARGS,
            output_dir=lambda wildcards: seeds_template(A.AGENT_DIR, wildcards),
            results=lambda wildcards: seeds_template(A.ONLINE_RESULT, wildcards),
            device=config["device"],
            logger=config["logger"]["mode"],
        log:
            f"logs/agents/{{env}}/{{agent_tag}}/{job_label(_seeds)}.log",
        benchmark:
            f"benchmarks/agents/{{env}}/{{agent_tag}}/{job_label(_seeds)}.tsv"
        threads: 2
        priority: 20
        conda:
            "../../envs/slate_rl.yaml"
        resources:
            mem_mb=8000,
            runtime=1440 * len(_seeds or [0]),  # an upper bound: stacked SAC seeds share each step's cost
            gpu=1,
        shell:
            "slate-rl train-agent --threads {threads} --env {wildcards.env} {params.env_spec} "
            "--embeddings-file {input.embeddings} --agent {wildcards.agent_tag} {params.ranker} --seeds {params.seeds} "
            "{params.online} {params.build} {params.agent} "
            "{params.test} --device {params.device} --logger-mode {params.logger} --no-progress "
            "--output-dir {params.output_dir} "
            "--results {params.results} > {log} 2>&1"
