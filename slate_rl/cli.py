"""``slate-rl``: every stage as a subcommand, with the options its Snakemake rule uses.

User errors (``SlateRLError``) print one line, ``error: ...``, and exit with status 2. Every stage
takes ``--threads N``, the CPU threads it computes with (Snakemake passes the rule's ``threads``;
by hand the default is ``$SLATE_RL_THREADS``, else ``$OMP_NUM_THREADS``, else the available cores).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

STAGES = (
    "slate_rl.stages.make_embeddings",
    "slate_rl.stages.generate_logs",
    "slate_rl.stages.evaluate_policy",
    "slate_rl.stages.train_mf",
    "slate_rl.stages.pretrain_gems",
    "slate_rl.stages.train_agent",
    "slate_rl.stages.offline_references",
    "slate_rl.stages.collect",
    "slate_rl.stages.export_dataset",
    "slate_rl.stages.train_offline",
    "slate_rl.stages.aggregate",
    "slate_rl.stages.report",
    "slate_rl.stages.bench",
)


def stage_modules(argv: Sequence[str]) -> tuple[str, ...]:
    """The stage modules the parser needs: only the named stage's when ``argv`` starts with one (each
    Snakemake job then imports its own stage, not Lightning and every model for ``make-embeddings``),
    every stage's otherwise (``--help``, a typo: the usage lists them all)."""
    if argv:
        module_name = "slate_rl.stages." + argv[0].replace("-", "_")
        if module_name in STAGES and argv[0] == importlib.import_module(module_name).NAME:
            return (module_name,)
    return STAGES


def build_parser(modules: Sequence[str] = STAGES) -> argparse.ArgumentParser:
    from slate_rl.stages.common import positive_int

    parser = argparse.ArgumentParser(prog="slate-rl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    for module_name in modules:
        module = importlib.import_module(module_name)
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.add_argument("--threads", type=positive_int, default=None,
                       help="CPU threads of torch and OpenMP (default: $SLATE_RL_THREADS, else $OMP_NUM_THREADS, "
                       "else the available cores, SMT siblings excluded); Snakemake passes the rule's threads")
        p.set_defaults(_run=module.run)
    return parser


ALLOCATION_FAILURES = ("can't allocate memory", "out of memory")
"""How torch words a failed allocation in a RuntimeError (torch.OutOfMemoryError is one too)."""


def is_allocation_failure(exc: BaseException) -> bool:
    """A MemoryError (numpy, Python) or torch's RuntimeError for an allocation that failed; any other
    RuntimeError is a bug and keeps its traceback."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(text in str(exc) for text in ALLOCATION_FAILURES))


def main(argv: Sequence[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning, whatever command started the job: a job whose threads
    # outnumber the cores it gets (other jobs, other users) ran 15-60x slower spinning (bench/README.md,
    # "threads"). The OpenMP runtime reads this when torch loads, hence before any import of torch;
    # a value the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from slate_rl.core.device import set_threads
    from slate_rl.core.errors import SlateRLError
    from slate_rl.pipeline import PLUGINS_ENV, load_plugins

    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # plugins first: their methods and agents are choices and options of train-offline and train-agent
        load_plugins(os.environ.get(PLUGINS_ENV, "").split(","))
    except SlateRLError as exc:
        print(f"error: ${PLUGINS_ENV}: {exc}", file=sys.stderr)
        return 2
    args = build_parser(stage_modules(argv)).parse_args(argv)
    try:
        from slate_rl.stages.common import check_outputs

        check_outputs(args)
        set_threads(args.threads)
        args._run(args)
    except SlateRLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:  # e.g. a size typed with too many zeros
        if not is_allocation_failure(exc):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: out of memory ({detail}); lower the sizes given (sessions, episodes, batch size, widths) "
              "or run on a machine with more memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
