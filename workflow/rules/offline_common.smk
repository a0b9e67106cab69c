# Helpers of the offline rules (workflow/rules/offline.smk): the behaviour agent's checkpoints and the
# datasets' inputs. Apart from the rules, as `snakemake --lint` asks.


def behaviour_dir(wildcards):
    return A.path(A.AGENT_DIR, env=wildcards.env, agent_tag=behaviour_tag(config),
                  seed=config["offline_data"]["behaviour_seed"])


def behaviour_checkpoint(wildcards, which):
    return A.agent_checkpoint(which, behaviour_dir(wildcards))


def shared_inputs(wildcards):
    """The simulator's table, the GeMS and the expert (state encoder) every offline rule reads."""
    return {
        "embeddings": embeddings_of(wildcards),
        "gems": A.path(A.GEMS, env=wildcards.env, gems_tag=gems_tag(config)),
        "expert": behaviour_checkpoint(wildcards, "best"),
    }


def references_input(wildcards):
    return A.path(A.OFFLINE_REFERENCES, env=wildcards.env)


def dataset_inputs(wildcards):
    """The shared inputs, plus the medium checkpoint (medium; step_mix mixing with it), the final training state
    (replay) or the logged sessions (logged); expert and medium also the reference policies their labels are
    checked against."""
    inputs = shared_inputs(wildcards)
    if wildcards.quality in ("expert", "medium"):
        inputs["references"] = references_input(wildcards)
    if wildcards.quality == "medium" or (wildcards.quality == "step_mix"
                                         and config["offline_data"]["step_mix_other"] == "medium"):
        inputs["behaviour"] = behaviour_checkpoint(wildcards, "medium")
    if wildcards.quality == "replay":  # the expert's training buffer
        inputs["replay"] = behaviour_checkpoint(wildcards, "last")
    if wildcards.quality == "logged":  # the logged sessions GeMS trained on
        inputs["logs"] = A.path(A.LOGS, env=wildcards.env)
    return inputs


def mixture_inputs(wildcards):
    weights = config["offline_data"]["mixtures"][wildcards.quality]
    return {**shared_inputs(wildcards),
            "components": [A.path(A.DATASET, env=wildcards.env, quality=q) for q in weights]}


def mixture_args(wildcards, input):
    weights = config["offline_data"]["mixtures"][wildcards.quality]
    return " ".join(f"--mix {path}={w}" for path, w in zip(input.components, weights.values()))


def collect_options():
    """Options of every collect job; the behaviour agent's own settings come from its checkpoint."""
    c = config["offline_data"]
    options = (f"--episodes {c['episodes']} --seed {c['seed']} --noise {c['noise']} "
               f"--label-margin {c['label_margin']} --label-ratio {c['label_ratio']} --batch-size {c['batch_size']} "
               f"--step-mix-other {c['step_mix_other']} --sweep-noises {','.join(map(str, c['sweep_noises']))} "
               f"{TEST_ARGS}")
    options += "" if c["deterministic"] else " --stochastic"
    return options + ("" if c["label_check"] else " --skip-label-check")


def offline_inputs(wildcards):
    return {**shared_inputs(wildcards), "dataset": A.path(A.DATASET, **wildcards),
            "meta": A.path(A.DATASET_META, **wildcards), "references": references_input(wildcards)}


def expert_args():
    """How the expert acts during collection (the reference policies' collection-mode expert)."""
    c = config["offline_data"]
    return f"--expert-noise {c['noise']}" + ("" if c["deterministic"] else " --expert-stochastic")
