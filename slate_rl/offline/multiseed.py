"""Many seeds of one TD3+BC configuration trained on one dataset in one process.

A TD3+BC update at batch 256 is a few hundred small tensor ops whose cost on a CPU is mostly fixed
overhead; stacking S seeds along a leading dimension makes every op S times larger at far less than
S times the cost (``slate-rl bench offline --seeds 1,10``). The online counterpart is
:mod:`slate_rl.online.multiseed`.

**Networks.** :class:`StackedTD3BC` is a :class:`~slate_rl.offline.td3bc.TD3BC` whose actor, twin
critics and their targets hold the parameters of S ordinary TD3BCs stacked along a leading seed
dimension (:mod:`slate_rl.models.stacked`, same parameter names). It runs TD3BC's own ``update``,
``critic_loss`` and ``actor_loss`` unchanged: only the three hooks that reduce a batch and draw the
target policy noise keep the seed dimension, so each seed's loss is TD3BC's and the losses are
summed over seeds before ``backward`` (a seed's gradient is its own loss's). The optimisers are the
algorithm's own Adam over the stacked tensors: Adam is element-wise, so one Adam over S stacked
parameters is S independent Adams (one shared step counter, as every seed steps together), and
the delayed actor step, the Polyak averaging and the update counter are TD3BC's.

**Randomness.** Seed ``s``'s networks are those of ``train-offline --seed s`` (the caller builds
algorithm ``i`` after ``torch.manual_seed(seeds[i])``), its batches come from
``torch.Generator().manual_seed(s)`` as in :func:`~slate_rl.offline.loop.train_offline`, and its
target policy noise from its own generator seeded with ``s`` on the algorithm's device
(:func:`noise_generator`), the stream the single-seed loop's ``torch.manual_seed(s)`` gives its
global generator. So a seed's random streams depend neither on S nor on its neighbours, and a
seed trained here follows the single-seed run draw for draw: the two differ only by float
rounding (a batched matmul per layer instead of one matmul), which compounds over a long run, so
the two are equal in distribution, not bit for bit.

**Dataset and normaliser.** Every seed trains on the same buffer, prepared once
(:func:`~slate_rl.offline.loop.prepare_buffer`): the normaliser depends on the dataset only, so it
is one for all seeds and each seed's policy file holds a copy.

**Validation, outputs.** Every validation loads seed ``i``'s slice into ``algos[i]`` (an ordinary
TD3BC) and calls ``validate(i)``, so the caller validates it exactly as a single-seed run; at the
end ``algos[i]`` holds seed ``i``'s final state, ready for the single-seed policy file
(:func:`~slate_rl.offline.policy.save_policy`) and test.

**Divergence.** The guard keeps each seed apart: a seed that diverges stops being validated and
checkpointed, its entry of the result is the :class:`~slate_rl.offline.loop.DivergenceError` the
single-seed run would raise, and the other seeds go on (a seed's numbers never reach another's).

**Resume.** One resume checkpoint per seed, in the single-seed format (the seed's noise generator
in the place of the global generator), all written at the same step: a group checkpoint resumes
as a single-seed run and the other way round. The group resumes only when every seed's
checkpoint fits (same fingerprint, same step); otherwise every seed starts over.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from slate_rl.core.errors import ConfigError
from slate_rl.core.io import check_seed_group, resume_group
from slate_rl.core.logger import RunLogger
from slate_rl.core.rng import cuda_devices
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.models.stacked import SeedStates, stack_mlp, stack_optimizer
from slate_rl.offline.base import OfflineAlgo
from slate_rl.offline.config import OfflineConfig
from slate_rl.offline.loop import (
    DivergenceError,
    Guard,
    OfflineState,
    _load_last,
    _save_last,
    record_validation,
    sample_batch,
)
from slate_rl.offline.nets import EnsembleQ
from slate_rl.offline.td3bc import TD3BC

STACKABLE = ("td3bc",)
"""The offline algorithms that train several seeds in one process; the others train one seed per run."""


def check_stackable(algo: OfflineAlgo) -> TD3BC:
    """``algo`` if it can be trained multi-seed (TD3+BC); ConfigError otherwise."""
    if type(algo) is not TD3BC:
        raise ConfigError(f"multi-seed offline training supports {', '.join(STACKABLE)}, not {algo.name}; train its "
                          "seeds one by one")
    return algo


def noise_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Seed ``seed``'s target-noise generator on ``device``: the stream of torch's global generator there after
    ``torch.manual_seed(seed)`` (the single-seed loop's)."""
    return torch.Generator(device=device).manual_seed(seed)


class StackedEnsembleQ(EnsembleQ):
    """S :class:`~slate_rl.offline.nets.EnsembleQ` s stacked: ``(S, B, obs)``, ``(S, B, act)`` -> ``(n, S, B)``."""

    def __init__(self, critics: Sequence[EnsembleQ]) -> None:
        nn.Module.__init__(self)
        self.members = nn.ModuleList([stack_mlp(nets) for nets in zip(*(c.members for c in critics), strict=True)])


class StackedTD3BC(TD3BC, SeedStates):
    """S TD3BCs of one configuration as one algorithm over ``(S, B, ...)`` batches; ``update`` returns one value
    per seed for every metric (shape ``(S,)``).

    Args:
        algos: the seeds' algorithms (plain :class:`TD3BC`, same configuration and action box); their current
            state (networks, optimiser state, update counter) is the starting point.
        generators: one target-noise generator per seed (:func:`noise_generator`).
    """

    def __init__(self, algos: Sequence[TD3BC], generators: Sequence[torch.Generator]) -> None:
        if not algos or len(algos) != len(generators):
            raise ValueError("StackedTD3BC needs one generator per algorithm, and at least one algorithm")
        first = check_stackable(algos[0])
        for a in algos[1:]:
            check_stackable(a)
            if (a.cfg != first.cfg or a.gamma != first.gamma or not torch.equal(a.action_center, first.action_center)
                    or not torch.equal(a.action_scale, first.action_scale)):
                raise ConfigError("multi-seed training needs algorithms of one configuration and one action box")
        OfflineAlgo.__init__(self, first.obs_dim, first.action_center, first.action_scale, first.gamma)
        self.cfg, self.num_seeds, self.generators = first.cfg, len(algos), list(generators)
        self.actor = stack_mlp([a.actor for a in algos])
        self.critic = StackedEnsembleQ([a.critic for a in algos])
        self.actor_target = stack_mlp([a.actor_target for a in algos]).requires_grad_(False)
        self.critic_target = StackedEnsembleQ([a.critic_target for a in algos]).requires_grad_(False)
        self.actor_opt = stack_optimizer(first.actor_opt, first, self)
        self.critic_opt = stack_optimizer(first.critic_opt, first, self)
        self.register_buffer("last_actor_loss", torch.stack([a.last_actor_loss for a in algos]), persistent=False)
        self.to(first.action_center)  # its device and float dtype
        self._record_seed_shapes(first)
        self.load_seed_states([a.state_dict() for a in algos])

    # ------------------------------------------------------------------ hooks of TD3BC's loss code
    def _noise(self, like: Tensor) -> Tensor:
        return torch.stack([torch.randn(like.shape[1:], generator=g, dtype=like.dtype, device=like.device)
                            for g in self.generators])

    def _mean(self, x: Tensor, members: bool = False) -> Tensor:
        per_seed = x.transpose(0, 1) if members else x
        return per_seed.reshape(self.num_seeds, -1).mean(dim=1)

    def _mse(self, a: Tensor, b: Tensor, members: bool = False) -> Tensor:
        return self._mean(F.mse_loss(a, b, reduction="none"), members)

    @staticmethod
    def descend(loss: Tensor, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """One step on the sum of the seeds' losses: each seed's parameters get their own loss's gradient."""
        OfflineAlgo.descend(loss.sum(), optimizers)

    def _shared(self, key: str) -> bool:
        """State-dict entries common to every seed: the action box and the update counter."""
        return key in ("action_center", "action_scale", "updates")


def stack_batches(batches: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """S batches of :func:`~slate_rl.offline.loop.sample_batch` as one ``(S, B, ...)`` batch."""
    return {k: torch.stack([b[k] for b in batches]) for k in batches[0]}


def train_offline_seeds(
    algos: Sequence[OfflineAlgo],
    buffer: EpisodeBuffer,
    cfg: OfflineConfig,
    seeds: Sequence[int],
    validate: Callable[[int], float | tuple[float, dict[str, float | None]]],
    last_paths: Sequence[str | os.PathLike[str]],
    logger: RunLogger | None = None,
    progress: bool = True,
    fingerprints: Sequence[str] | None = None,
) -> list[OfflineState | DivergenceError]:
    """Train ``algos[i]`` (TD3BC) with seed ``seeds[i]`` on ``buffer`` (states already prepared), all together
    (module doc): the multi-seed :func:`~slate_rl.offline.loop.train_offline`, with its schedule, guard,
    validation and resume. ``validate(i)`` returns the validation return of ``algos[i]`` (or the return and its
    diagnostics), which holds seed ``i``'s current state when it is called; ``last_paths[i]`` is seed ``i``'s
    resume checkpoint, written under ``fingerprints[i]``; ``logger`` gets every seed's metrics under
    ``seed<s>/`` (one run for the group).

    Returns, per seed, its :class:`~slate_rl.offline.loop.OfflineState` (``algos[i]`` then holds its final
    state), or the :class:`~slate_rl.offline.loop.DivergenceError` that stopped it.
    """
    n = len(algos)
    check_seed_group(n, seeds, last_paths, fingerprints, "algorithm")
    tds = [check_stackable(a) for a in algos]
    device = tds[0].action_center.device
    prints = list(fingerprints or [""] * n)
    lasts = [Path(p) for p in last_paths]

    def fresh() -> tuple[list[OfflineState], list[torch.Generator], list[torch.Generator]]:
        return ([OfflineState() for _ in range(n)], [torch.Generator().manual_seed(s) for s in seeds],
                [noise_generator(s, device) for s in seeds])

    states, samplers, noises = fresh()
    if not resume_group(seeds, lasts, tds, lambda i: _load_seed(lasts[i], tds[i], states[i], samplers[i], noises[i],
                                                                prints[i]),
                        lambda: [st.step for st in states]):
        states, samplers, noises = fresh()
    stacked = StackedTD3BC(tds, noises)
    failed: dict[int, DivergenceError] = {}
    guard = Guard(cfg.q_limit)
    step = states[0].step
    bar = tqdm(total=cfg.total_steps, initial=step, desc=f"{stacked.name} x{n}", unit="step", disable=not progress,
               dynamic_ncols=True, mininterval=2.0)
    metrics: dict[str, Tensor] = {}
    segment_start = run_start = time.perf_counter()
    first_step = step

    def healthy() -> list[int]:
        """Check the guard; the seeds that have not diverged."""
        for i, hit in enumerate(guard.failures()):
            if hit is not None and i not in failed:
                failed[i] = guard.error(f"{stacked.name} (seed {seeds[i]})", *hit)
                print(f"{failed[i]}; the other seeds go on", flush=True)
        return [i for i in range(n) if i not in failed]

    while step < cfg.total_steps:
        metrics = stacked.update(stack_batches([sample_batch(buffer, cfg, g) for g in samplers]))
        step += 1
        guard.observe(step, metrics)
        done = step == cfg.total_steps
        log, validation, checkpoint = (step % cfg.log_interval == 0 or done, step % cfg.eval_interval == 0 or done,
                                       step % cfg.checkpoint_interval == 0 or done)
        if not (log or validation or checkpoint):
            continue
        alive = healthy()
        table = torch.stack(list(metrics.values()), dim=1).tolist()  # (S, metrics), one host sync
        for i in alive:
            states[i].step = step
            states[i].metrics = dict(zip(metrics, table[i], strict=True))
        if log:
            bar.update(step - bar.n)
            if not progress:  # a plain line for log files
                rate = (step - first_step) / max(time.perf_counter() - run_start, 1e-9)
                print(f"{stacked.name} x{n}: step {step}/{cfg.total_steps}, {rate:.1f} steps/s ({n * rate:.1f} "
                      f"seed-steps/s), about {(cfg.total_steps - step) / max(rate, 1e-9):.0f} s left", flush=True)
            if logger is not None:
                logger.log({f"seed{seeds[i]}/{k}": v for i in alive for k, v in states[i].metrics.items()}, step=step)
        if validation or checkpoint:
            for i in alive:
                tds[i].load_state_dict(stacked.seed_state_dict(i))
        if validation:
            vals = {}
            for i in alive:
                with torch.random.fork_rng(devices=cuda_devices()):  # validation must not touch training's RNG
                    outcome = validate(i)
                vals[i] = record_validation(states[i], step, outcome, logger, prefix=f"seed{seeds[i]}/")
            if vals:
                bar.set_postfix(val=f"{sum(vals.values()) / len(vals):.1f}")
        if checkpoint:
            now = time.perf_counter()
            for i in alive:
                states[i].train_seconds += now - segment_start
                _save_seed(lasts[i], tds[i], states[i], samplers[i], noises[i], prints[i], seeds[i])
            segment_start = now
    bar.close()
    healthy()
    for i in range(n):
        if i not in failed:
            tds[i].load_state_dict(stacked.seed_state_dict(i))
    return [failed.get(i, st) for i, st in enumerate(states)]


def _save_seed(path: Path, algo: TD3BC, state: OfflineState, sampler: torch.Generator, noise: torch.Generator,
               fingerprint: str, seed: int) -> None:
    """Seed's resume checkpoint in the single-seed format: its noise generator as torch's global generator of
    its device (the other global generators as a single-seed run leaves them: seeded, unused)."""
    with torch.random.fork_rng(devices=cuda_devices()):
        torch.manual_seed(seed)
        _set_global(noise)
        _save_last(path, algo, state, sampler, fingerprint)


def _load_seed(path: Path, algo: TD3BC, state: OfflineState, sampler: torch.Generator, noise: torch.Generator,
               fingerprint: str) -> str | None:
    """Resume a seed from a checkpoint of the single-seed format; the reason why not, or None when resumed."""
    with torch.random.fork_rng(devices=cuda_devices()):
        refused = _load_last(path, algo, state, sampler, fingerprint)
        if refused is None:
            noise.set_state(torch.cuda.get_rng_state(noise.device) if noise.device.type == "cuda"
                            else torch.get_rng_state())
    return refused


def _set_global(generator: torch.Generator) -> None:
    if generator.device.type == "cuda":
        torch.cuda.set_rng_state(generator.get_state(), generator.device)
    else:
        torch.set_rng_state(generator.get_state())
