"""Options shared by several stages (environment, embeddings, device)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from slate_rl.core.artifacts import check_environment, parse_gems_tag
from slate_rl.core.config import SIZE_MAXIMA, bounded_int
from slate_rl.core.config import finite_float as finite_float  # the stages' type of real-valued options
from slate_rl.core.errors import ArtifactError, ConfigError
from slate_rl.core.io import file_sha256
from slate_rl.models.rankers import GeMSRanker, load_gems_ranker
from slate_rl.online.config import parse_agent_tag
from slate_rl.sim.config import PRESETS, SimulatorConfig, env_record, make_env_config
from slate_rl.sim.embeddings import DEFAULT_EMBEDDINGS_SEEDS
from slate_rl.sim.protocol import Simulator, item_table, make_simulator


def parse_seeds(text: str) -> list[int]:
    """The seeds of a ``--seeds 0,1,2`` option: distinct integers, in the order given."""
    try:
        seeds = [int(v) for v in text.split(",")]
    except ValueError as exc:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}") from exc
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct, got {text!r}")
    return seeds


def per_seed_path(template: str, seed: int, option: str) -> Path:
    """Seed ``seed``'s path of a ``--seeds`` run's ``option``, a template holding ``{seed}``."""
    if "{seed}" not in template:
        raise ConfigError(f"{option} must contain {{seed}} when training several seeds (--seeds), got {template!r}")
    return Path(template.replace("{seed}", str(seed)))


def seed_outputs(args: argparse.Namespace, stage: str, *options: str) -> tuple[list[int], list[list[Path]]]:
    """The seeds of a run given ``--seed`` or ``--seeds`` (exactly one; ConfigError otherwise) and, for each output
    option (its attribute name, e.g. ``results``), every seed's path: the option itself for ``--seed``, its
    ``{seed}`` template filled in for ``--seeds``."""
    if (args.seed is None) == (args.seeds is None):
        raise ConfigError(f"{stage} needs exactly one of --seed and --seeds")
    if args.seeds is None:
        return [args.seed], [[Path(getattr(args, name))] for name in options]
    seeds = parse_seeds(args.seeds)
    flags = ["--" + name.replace("_", "-") for name in options]
    return seeds, [[per_seed_path(getattr(args, name), s, flag) for s in seeds]
                   for name, flag in zip(options, flags, strict=True)]


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N] (default: auto)")


def add_env_arguments(parser: argparse.ArgumentParser, embeddings_required: bool = False, device: bool = True) -> None:
    parser.add_argument(
        "--env", required=True,
        help=f"environment: one of {', '.join(PRESETS)}, or a name defined with --env-spec",
    )
    parser.add_argument(
        "--env-spec", type=_json_object, default=None,
        help="JSON definition of a user-defined environment (its entry in config.yaml's environments section), "
        'e.g. \'{"base": "focused_mix", "diversity_penalty": 2.0}\'',
    )
    parser.add_argument(
        "--embeddings-file", required=embeddings_required, default=None,
        help="item-embedding table (.npy array or .pt tensor, num_items x 20), e.g. data/embeddings/focused.npy "
        "or the paper's tables; when omitted the table is generated from --embeddings-seed",
    )
    if not embeddings_required:
        parser.add_argument(
            "--embeddings-seed", type=int, default=None,
            help="seed of the generated item table when no --embeddings-file is given "
            f"(default: the kind's, {DEFAULT_EMBEDDINGS_SEEDS})",
        )
    if device:
        add_device_argument(parser)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def env_config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    user_defined = {args.env: args.env_spec} if args.env_spec else None
    return make_env_config(args.env, user_defined)


def simulator_from_args(args: argparse.Namespace) -> tuple[Simulator, dict[str, Any]]:
    """Build the simulator the options describe; also return a description of its item table."""
    cfg = env_config_from_args(args)
    table, source = item_table(cfg, args.embeddings_file, getattr(args, "embeddings_seed", None))
    return make_simulator(cfg, table, device=args.device), source


def agent_gems(args: argparse.Namespace, sim: Simulator) -> GeMSRanker | None:
    """The GeMS checkpoint (``--gems``) of an agent that needs one (``--agent``, e.g. ``sac_gems_<tag>``), ``None``
    for other agents; one trained for another environment, or whose settings differ from the tag's, is refused
    naming both."""
    _, gems_tag = parse_agent_tag(args.agent)
    if gems_tag is None:
        return None
    if not args.gems:
        raise ConfigError(f"agent {args.agent} needs --gems (the GeMS checkpoint of {gems_tag})")
    gems = load_gems_ranker(args.gems, num_items=sim.config.num_items, device=sim.device)
    check_environment(args.gems, gems.meta, args.env, env_record(sim.config), "GeMS checkpoint")
    recorded = gems.meta.get("tag")
    if gems.action_dim != parse_gems_tag(gems_tag)["latent_dim"] or (recorded is not None and recorded != gems_tag):
        raise ArtifactError(f"{args.gems}: this GeMS checkpoint is {recorded or 'untagged'} with latent size "
                            f"{gems.action_dim}, but agent {args.agent} names GeMS {gems_tag}: give the checkpoint "
                            f"data/gems/{args.env}/{gems_tag}.ckpt")
    return gems


OUTPUT_OPTIONS = ("output", "output_dir", "results", "metrics", "figures_dir", "policy_output")
"""The options of the stages that name what they write (files, or directories of files)."""
OUTPUT_DIR_OPTIONS = ("output_dir", "figures_dir")
"""Those of :data:`OUTPUT_OPTIONS` that name a directory."""


def check_outputs(args: argparse.Namespace) -> None:
    """One ConfigError, before any work, when an output option's path cannot be written: a directory where a file
    goes, a file where a directory goes, or the nearest existing directory on its way not writable (a read-only
    results folder would otherwise fail after training). ``slate-rl`` runs it for every stage."""
    for option in OUTPUT_OPTIONS:
        value = getattr(args, option, None)
        if not value:
            continue
        flag = "--" + option.replace("_", "-")
        if option in OUTPUT_DIR_OPTIONS and Path(value).exists() and not Path(value).is_dir():
            raise ConfigError(f"{flag} {value} is a file, not a directory; give a directory path")
        if option not in OUTPUT_DIR_OPTIONS and Path(value).is_dir():
            raise ConfigError(f"{flag} {value} is a directory; give the path of the file to write")
        path = Path(value).absolute()
        target = path if path.is_dir() else path.parent
        while not target.exists() and target != target.parent:
            target = target.parent
        try:  # a real probe: permissions alone miss read-only mounts, and root ignores them
            with tempfile.TemporaryFile(dir=target):
                pass
        except OSError as exc:
            raise ConfigError(f"{flag} {value}: {target} is not writable ({exc.strerror}), so "
                              "nothing could be written there; make it writable or give another path") from None


def size_int(field: str) -> Any:
    """argparse type of a size option named like a config field: 1 to the field's :data:`SIZE_MAXIMA` bound."""
    return bounded_int(SIZE_MAXIMA[field], minimum=1)


def positive_int(text: str) -> int:
    """argparse type for counts that must be >= 1."""
    return bounded_int(None, minimum=1)(text)


def check_fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--{name} must be in [0, 1], got {value}")
    return value


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of every training stage: device, logger mode, progress bar."""
    add_device_argument(parser)
    parser.add_argument(
        "--logger-mode", default=None, choices=("offline", "disabled", "local", "cloud"),
        help="SwanLab mode (default: offline; $SLATE_RL_LOGGER overrides)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def input_hashes(**paths: str | None) -> dict[str, str]:
    """name -> sha256 prefix of each given input file (recorded in every result)."""
    return {name: file_sha256(path) for name, path in paths.items() if path}
