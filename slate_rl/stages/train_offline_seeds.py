"""``train-offline --seeds`` for TD3+BC: the seeds train together in one process, their networks stacked
(:mod:`slate_rl.offline.multiseed`), and every seed gets exactly the files ``train-offline --seed s`` writes
(``--policy-output`` and ``--results`` hold ``{seed}``): its policy file, its resume checkpoint
``<policy>.last.ckpt``, its results JSON (``"seed": s``, its learning curve and test return) and the
``.timings.json`` beside it (its training time is the group's; the group is named in
``seeds_trained_together``). The inputs and the reference points do not depend on the seed: they are loaded
and computed once. The pieces (:func:`~slate_rl.stages.train_offline.build_algo`, ``run_meta``,
``references``, ``write_outputs``) are the single-seed stage's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from slate_rl.core.errors import ConfigError
from slate_rl.core.logger import RunLogger
from slate_rl.offline.config import OfflineConfig
from slate_rl.offline.evaluation import evaluate_returns
from slate_rl.offline.loop import DivergenceError, OfflineState
from slate_rl.offline.multiseed import STACKABLE, train_offline_seeds
from slate_rl.offline.policy import policy_for
from slate_rl.stages.train_offline import (
    OfflineInputs,
    build_algo,
    prepare_data,
    references,
    resume_path,
    run_meta,
    write_outputs,
)


def train_together(args: argparse.Namespace, inputs: OfflineInputs, cfg: OfflineConfig, algo_cfg: Any,
                   seeds: list[int], policies: list[Path], results: list[Path]) -> list[dict[str, Any]]:
    """Train ``seeds`` of ``args.algo`` (TD3+BC) together; the results of every seed, in order. A seed that
    diverged writes nothing: once the others are written, one DivergenceError names it."""
    if args.algo not in STACKABLE:
        raise ConfigError(f"train-offline --seeds trains {', '.join(STACKABLE)} together, not {args.algo}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct, got {seeds}")
    buffer, normalizer = prepare_data(inputs, cfg)
    algos = [build_algo(args, inputs, cfg, algo_cfg, normalizer, s) for s in seeds]
    metas, prints = zip(*(run_meta(args, inputs, cfg, algo_cfg, s) for s in seeds), strict=True)
    sim = inputs.sim
    policy_fns = [policy_for(inputs.encoder, inputs.decoder, a, normalizer) for a in algos]

    def validate(i: int) -> float:
        return float(evaluate_returns(sim, policy_fns[i], cfg.val_seed, cfg.val_sessions).mean())

    logger = RunLogger(f"{args.algo}-{args.env}-{metas[0]['quality']}-seeds{'_'.join(map(str, seeds))}",
                       {**metas[0], "seeds": seeds}, args.logger_mode, group=args.env)
    start = time.perf_counter()
    outcomes = train_offline_seeds(algos, buffer, cfg, seeds, validate, [resume_path(p) for p in policies],
                                   logger, progress=not args.no_progress, fingerprints=list(prints))
    elapsed = time.perf_counter() - start
    logger.finish()
    refs = references(args, inputs)
    written = []
    for algo, outcome, meta, policy_path, result in zip(algos, outcomes, metas, policies, results, strict=True):
        if isinstance(outcome, OfflineState):
            written.append(write_outputs(args, inputs, algo, normalizer, outcome, meta, refs, policy_path, result,
                                         seeds_trained_together=",".join(map(str, seeds))))
    failed = [o for o in outcomes if isinstance(o, DivergenceError)]
    if failed:
        raise DivergenceError("; ".join(str(o) for o in failed))
    print(f"{len(seeds)} seeds of {args.algo} trained together in {elapsed:.0f} s on {sim.device}")
    return written
