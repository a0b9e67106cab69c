# Config validation (once, at parse time) and helpers shared by the rules.
import sys

from slate_rl.models.gems import GEMS_TAG_WILDCARD

from slate_rl.core.errors import ConfigError
from slate_rl.pipeline import (
    config_args,
    embeddings_source_arg,
    env_config,
    env_spec_arg,
    gems_config,
    gems_tag,
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
    policy="random|oracle|eps-greedy",


def embeddings_of(wildcards):
    return f"data/embeddings/{env_config(config, wildcards.env).embeddings}.npy"


def all_targets():
    targets = []
    for env in config["envs"]:
        targets.append(f"data/logs/{env}.npz")
        targets.append(f"data/mf/{env}.npy")
        targets.append(f"data/gems/{env}/{gems_tag(config)}.ckpt")
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
