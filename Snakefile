# slate_rl pipeline: TopicRec logs -> embeddings and GeMS -> online agents -> offline datasets
# -> offline RL -> report. Every artifact is a rule output; see README.md for the table.
import os

from snakemake.utils import min_version

min_version("9.0")


# The defaults live beside this Snakefile, so `--directory` can point elsewhere.
configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/simulator.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/agents.smk"
include: "workflow/rules/offline.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
        "results/report.md",
    default_target: True
