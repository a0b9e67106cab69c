# Config validation (once, at parse time) and helpers shared by the rules.
import sys

from slate_rl.core.errors import ConfigError
from slate_rl.pipeline import embeddings_source_arg, env_config, env_spec_arg, validate_config

try:
    config.update(validate_config(config, workflow.source_path("../schemas/config.schema.yaml")))
except ConfigError as exc:
    sys.exit(f"Invalid configuration: {exc}")


wildcard_constraints:
    env=r"[A-Za-z0-9_]+",
    kind="focused|diffuse",
    policy="random|oracle|eps-greedy",


def embeddings_of(wildcards):
    return f"data/embeddings/{env_config(config, wildcards.env).embeddings}.npy"


def all_targets():
    targets = []
    for env in config["envs"]:
        targets.append(f"data/logs/{env}.npz")
        for policy in config["evaluation"]["reference_policies"]:
            targets.append(f"results/{env}/reference/{policy}.json")
    return targets
