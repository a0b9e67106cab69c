# Config validation (once, at parse time) and helpers shared by the rules. Every name, tag and path
# comes from slate_rl.core.artifacts or a registration; nothing imported here imports torch.
import os
import sys

from slate_rl.core import artifacts as A
from slate_rl.core.errors import ConfigError
from slate_rl.online.config import AGENT_KINDS, agent_tag_wildcard, parse_agent_tag
from slate_rl.pipeline import (
    PLUGINS_ENV,
    agent_section_args,
    behaviour_tag,
    config_args,
    embeddings_source_arg,
    env_config,
    env_spec_arg,
    gems_config,
    gems_tag,
    agent_tags,
    offline_algos,
    job_label,
    job_rule_name,
    job_seeds,
    method_priority,
    per_seed,
    refuse_templated_configs,
    section_args,
    seed_jobs,
    seeds_template,
    validate_config,
)

try:
    refuse_templated_configs(workflow.configfiles)
    config.update(validate_config(config, workflow.source_path("../schemas/config.schema.yaml")))
except ConfigError as exc:
    sys.exit(f"Invalid configuration: {exc}")
# Every job's slate-rl command loads the same plugins (their methods and agents) as this validation did.
os.environ[PLUGINS_ENV] = ",".join(config.get("plugins") or [])


wildcard_constraints:
    env=r"[A-Za-z0-9_]+",
    kind="|".join(A.EMBEDDING_KINDS),
    gems_tag=A.GEMS_TAG_WILDCARD,
    agent_tag=agent_tag_wildcard(),
    seed=r"\d+",
    policy="|".join(A.REFERENCE_POLICIES),
    algo="|".join(offline_algos()),
    quality=A.QUALITY_WILDCARD,


TEST_ARGS = A.evaluation_args(config["evaluation"]["test_seed"], config["evaluation"]["test_sessions"])


def embeddings_of(wildcards):
    return A.path(A.EMBEDDINGS, kind=env_config(config, wildcards.env).embeddings)


def all_targets():
    targets = []
    for env in config["envs"]:
        targets += [A.path(A.LOGS, env=env), A.path(A.MF, env=env), A.path(A.GEMS, env=env, gems_tag=gems_tag(config))]
        for agent in agent_tags(config):
            for seed in config["agents"]["seeds"]:
                targets.append(A.path(A.ONLINE_RESULT, env=env, agent_tag=agent, seed=seed))
        for quality in config["offline_data"]["qualities"]:
            targets.append(A.path(A.DATASET, env=env, quality=quality))
        for algo in config["offline"]["algos"]:
            targets.append(A.path(A.AGGREGATE_RESULT, env=env, algo=algo))
            for quality in config["offline"]["qualities"]:
                for seed in config["offline"]["seeds"]:
                    targets.append(A.path(A.OFFLINE_RESULT, env=env, quality=quality, algo=algo, seed=seed))
        for policy in config["evaluation"]["reference_policies"]:
            targets.append(A.path(A.REFERENCE_RESULT, env=env, policy=policy))
    return targets


def gems_item_table(wildcards):
    """The frozen item table a GeMS variant needs (none for scratch)."""
    mode = gems_config(config, wildcards.gems_tag).item_table
    if mode == "mf_fixed":
        return [A.path(A.MF, env=wildcards.env)]
    if mode == "ideal":
        return [embeddings_of(wildcards)]
    return []


def agent_inputs(wildcards):
    """The files an agent needs besides the simulator's table (its registration's needs): its GeMS checkpoint,
    the MF table."""
    name, gems = parse_agent_tag(wildcards.agent_tag)
    needs = AGENT_KINDS[name].needs
    files = {"gems": A.path(A.GEMS, env=wildcards.env, gems_tag=gems)} if "gems" in needs else {}
    return {**files, **({"mf": A.path(A.MF, env=wildcards.env)} if "mf" in needs else {})}


def agent_input_args(wildcards, input):
    return " ".join(f"--{name} {input[name]}" for name in ("gems", "mf") if name in input.keys())
