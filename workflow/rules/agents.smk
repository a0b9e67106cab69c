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
        online=section_args(config, "online"),
        build=f"--belief-table {config['agents']['belief_table']}",
        # its own agent's section only: editing another agent's settings does not rerun this job
        agent=lambda wildcards: agent_section_args(config, wildcards.agent_tag),
        test=TEST_ARGS,
        output_dir=lambda wildcards: A.path(A.AGENT_DIR, **wildcards),
        device=config["device"],
        logger=config["logger"]["mode"],
    log:
        "logs/agents/{env}/{agent_tag}/seed{seed}.log",
    benchmark:
        "benchmarks/agents/{env}/{agent_tag}/seed{seed}.tsv"
    threads: 2
    priority: 20
    conda:
        "../../envs/slate_rl.yaml"
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=1,
    shell:
        "slate-rl train-agent --threads {threads} --env {wildcards.env} {params.env_spec} "
        "--embeddings-file {input.embeddings} --agent {wildcards.agent_tag} {params.ranker} --seed {wildcards.seed} "
        "{params.online} {params.build} {params.agent} "
        "{params.test} --device {params.device} --logger-mode {params.logger} --no-progress "
        "--output-dir {params.output_dir} "
        "--results {output.results} > {log} 2>&1"


# online.seeds_per_job > 1: the seeds of agents.seeds in consecutive groups of that size, one job per group
# (and environment, agent) running `train-agent --seeds a,b,c`, which writes for every seed the files of a
# --seed run (slate_rl/stages/train_agent_seeds.py); the rule declares them all, so the rules that read
# them are unchanged. Only the agents of A.MULTISEED_AGENTS (plain SAC with a ranker) train this way; the
# others keep online_agent's one job per seed (the group rules do not match their tags). The resume state
# of each seed (last.work.ckpt) is no output, so a killed group resumes. None of this exists with 1.
for _seeds in seed_jobs(config, "online"):

    rule:
        name:
            f"online_agent_seeds_{'_'.join(map(str, _seeds))}"
        input:
            unpack(agent_inputs),
            embeddings=embeddings_of,
        output:
            best=per_seed(A.agent_checkpoint("best"), _seeds),
            medium=per_seed(A.agent_checkpoint("medium"), _seeds),
            last=per_seed(A.agent_checkpoint("last"), _seeds),
            results=per_seed(A.ONLINE_RESULT, _seeds),
        wildcard_constraints:
            agent_tag=A.MULTISEED_AGENT_WILDCARD,
        params:
            seeds=",".join(map(str, _seeds)),
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
            f"logs/agents/{{env}}/{{agent_tag}}/seeds{'_'.join(map(str, _seeds))}.log",
        benchmark:
            f"benchmarks/agents/{{env}}/{{agent_tag}}/seeds{'_'.join(map(str, _seeds))}.tsv"
        threads: 2
        priority: 20
        conda:
            "../../envs/slate_rl.yaml"
        resources:
            mem_mb=8000,
            runtime=1440 * len(_seeds),  # an upper bound: the seeds share each step's cost
            gpu=1,
        shell:
            "slate-rl train-agent --threads {threads} --env {wildcards.env} {params.env_spec} "
            "--embeddings-file {input.embeddings} --agent {wildcards.agent_tag} {params.ranker} --seeds {params.seeds} "
            "{params.online} {params.build} {params.agent} "
            "{params.test} --device {params.device} --logger-mode {params.logger} --no-progress "
            "--output-dir {params.output_dir} "
            "--results {params.results} > {log} 2>&1"

    workflow.ruleorder(f"online_agent_seeds_{'_'.join(map(str, _seeds))}", "online_agent")
