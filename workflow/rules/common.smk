# Config validation (once, at parse time) and helpers shared by the rules.
import sys

from slate_rl.models.gems import GEMS_TAG_WILDCARD
from slate_rl.online.agents import AGENT_TAG_WILDCARD

from slate_rl.core.errors import ConfigError
from slate_rl.pipeline import (
    config_args,
    embeddings_source_arg,
    env_config,
    env_spec_arg,
    gems_config,
    gems_tag,
    agent_tags,
    validate_config,
)

try:
    config.update(validate_config(config, workflow.source_path("../schemas/config.schema.yaml")))
except ConfigError as exc:
    sys.exit(f"Invalid configuration: {exc}")


wildcard_constraints:
    env=r"[A-Za-z0-9_]+",
    kind="focused|diffuse",
    gems_tag=GEMS_TAG_WILDCARD,
    agent_tag=AGENT_TAG_WILDCARD,
    seed=r"\d+",
    policy="random|oracle|eps-greedy",
    algo="td3bc|cql|iql|bc|dt|dd",
    quality=r"(?!online\b|reference\b)[A-Za-z0-9_]+",


def embeddings_of(wildcards):
    return f"data/embeddings/{env_config(config, wildcards.env).embeddings}.npy"


def all_targets():
    targets = []
    for env in config["envs"]:
        targets.append(f"data/logs/{env}.npz")
        targets.append(f"data/mf/{env}.npy")
        targets.append(f"data/gems/{env}/{gems_tag(config)}.ckpt")
        for agent in agent_tags(config):
            for seed in config["agents"]["seeds"]:
                targets.append(f"results/{env}/online/{agent}/seed{seed}.json")
        for quality in config["offline_data"]["qualities"]:
            targets.append(f"data/offline/{env}/{quality}.npz")
        for algo in config["offline"]["algos"]:
            targets.append(f"results/{env}/{algo}.json")
            for quality in config["offline"]["qualities"]:
                for seed in config["offline"]["seeds"]:
                    targets.append(f"results/{env}/{quality}/{algo}/seed{seed}.json")
        for policy in config["evaluation"]["reference_policies"]:
            targets.append(f"results/{env}/reference/{policy}.json")
    return targets


def gems_item_table(wildcards):
    """The frozen item table a GeMS variant needs (none for scratch)."""
    mode = gems_config(config, wildcards.gems_tag).item_table
    if mode == "mf_fixed":
        return [f"data/mf/{wildcards.env}.npy"]
    if mode == "ideal":
        return [embeddings_of(wildcards)]
    return []


def agent_inputs(wildcards):
    """What an agent needs besides the simulator's table: its GeMS checkpoint or MF table."""
    if wildcards.agent_tag.startswith("sac_gems_"):
        return {"gems": f"data/gems/{wildcards.env}/{wildcards.agent_tag[len('sac_gems_'):]}.ckpt"}
    if wildcards.agent_tag == "sac_topk_mf":
        return {"mf": f"data/mf/{wildcards.env}.npy"}
    return {}


def agent_input_args(wildcards, input):
    return " ".join(f"--{name} {input[name]}" for name in ("gems", "mf") if name in input.keys())


# Offline datasets and offline RL (workflow/rules/offline.smk).
BASE_QUALITIES = "expert|medium|random|replay"


def behaviour_dir(wildcards):
    tag = f"sac_gems_{gems_tag(config)}"
    return f"data/agents/{wildcards.env}/{tag}/seed{config['offline_data']['behaviour_seed']}"


def dataset_inputs(wildcards):
    """The GeMS, the expert (state encoder and expert behaviour) and the medium checkpoint."""
    inputs = {
        "embeddings": embeddings_of(wildcards),
        "gems": f"data/gems/{wildcards.env}/{gems_tag(config)}.ckpt",
        "expert": f"{behaviour_dir(wildcards)}/best.ckpt",
    }
    if wildcards.quality == "medium":
        inputs["behaviour"] = f"{behaviour_dir(wildcards)}/medium.ckpt"
    if wildcards.quality == "replay":  # the expert's training buffer, read beside best.ckpt
        inputs["replay"] = f"{behaviour_dir(wildcards)}/last.ckpt"
    return inputs


def mixture_inputs(wildcards):
    weights = config["offline_data"]["mixtures"][wildcards.quality]
    return {
        "embeddings": embeddings_of(wildcards),
        "gems": f"data/gems/{wildcards.env}/{gems_tag(config)}.ckpt",
        "expert": f"{behaviour_dir(wildcards)}/best.ckpt",
        "components": [f"data/offline/{wildcards.env}/{q}.npz" for q in weights],
    }


def mixture_args(wildcards, input):
    weights = config["offline_data"]["mixtures"][wildcards.quality]
    return " ".join(f"--mix {path}={w}" for path, w in zip(input.components, weights.values()))


def collect_options():
    c = config["offline_data"]
    options = (f"--agent sac_gems_{gems_tag(config)} --episodes {c['episodes']} --seed {c['seed']} "
               f"--noise {c['noise']} --label-margin {c['label_margin']} --batch-size {c['batch_size']} "
               f"--test-seed {config['evaluation']['test_seed']} --test-sessions {config['evaluation']['test_sessions']} "
               f"{config_args(config['sac'])}")
    options += "" if c["deterministic"] else " --stochastic"
    return options + ("" if c["label_check"] else " --skip-label-check")


def offline_inputs(wildcards):
    return {
        "dataset": f"data/offline/{wildcards.env}/{wildcards.quality}.npz",
        "meta": f"data/offline/{wildcards.env}/{wildcards.quality}.json",
        "embeddings": embeddings_of(wildcards),
        "gems": f"data/gems/{wildcards.env}/{gems_tag(config)}.ckpt",
        "expert": f"{behaviour_dir(wildcards)}/best.ckpt",
    }
