# slate_rl pipeline: TopicRec logs -> embeddings and GeMS -> online agents -> offline datasets
# -> offline RL -> report. Every artifact is a rule output; see README.md for the table.
import os
import sys

from snakemake.utils import min_version

from slate_rl.core.config import load_yaml
from slate_rl.core.errors import ConfigError

min_version("9.0")


# The defaults live beside this Snakefile, so `--directory` can point elsewhere. A syntax error
# in them is named with its file and line (Snakemake's own message names neither).
try:
    load_yaml(os.path.join(workflow.basedir, "config.yaml"))
except ConfigError as exc:
    sys.exit(f"Invalid configuration: {exc}")


configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/offline_common.smk"
include: "workflow/rules/simulator.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/agents.smk"
include: "workflow/rules/offline.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
        A.REPORT,
    default_target: True
