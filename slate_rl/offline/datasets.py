"""Collect offline datasets with a trained SAC+GeMS agent in the batched simulator.

Qualities (D4RL's):

* ``expert``: the best-validation checkpoint, acting with its deterministic (mean) action plus
  Gaussian noise (``offline_data.noise``, 0.1 of the bounds' half-width by default). Sampling the
  SAC policy itself (``deterministic: false``) can be no better than random slates (seen: 43.7
  against a deterministic 94.1 and random 40.6), so it is an option, not the default;
* ``medium``: the online run's medium checkpoint (the validation snapshot closest to half the
  best validation return, see :mod:`slate_rl.online.loop`), acting like the expert;
* ``random``: latent actions drawn uniformly inside the GeMS action bounds;
* ``replay``: the expert run's own replay buffer (``last.ckpt``: the last ``buffer_capacity``
  training sessions, warm-up included);
* ``step_mix``: a per-step mixture (:class:`StepMixPolicy`): each session draws the expert's probability
  p ~ U(0, 1) when it starts, then every step shows the expert's slate with probability p, else the
  ``offline_data.step_mix_other`` behaviour's (medium, or uniform random latent actions), both acting like
  the expert quality;
* ``noise_sweep``: the expert at one noise level per session (:class:`NoisyPolicy` with levels), drawn
  uniformly among ``offline_data.sweep_noises``;
* mixtures: episodes concatenated from other datasets (:func:`mix_datasets`).

In ``step_mix`` and ``noise_sweep`` the behaviour's quality varies across sessions that share states (a
session-level mixture reveals its policy in the history, so there the return only matters at the first
step): they are the data on which return conditioning can matter. Their metadata records the behaviour's
return at each level on the test users (``behaviour.returns_by_level``), and their label is checked: the best
level must return more than (1 + ``label_margin``) x the worst (:func:`check_spread`).

**State encoder.** ``observations`` are belief states of *one* GRU per environment, the expert's
actor belief encoder, whatever the quality: datasets of one environment (and their mixtures)
then share one state space, an offline policy trained on any of them acts online through that
same encoder, and the random quality (which has no belief of its own) gets states too. For the
expert quality these are exactly the behaviour agent's beliefs. The metadata names the encoder
(``state_encoder``: checkpoint path and hash). The raw history (slates, clicks) is stored, so a
method can rebuild any other state.

**Labels.** An expert or medium label must be true on the fixed test users (:func:`check_label`):
both behaviours beat uniform random latent actions by ``label_margin``; the expert behaviour returns
at least ``label_ratio`` (0.9) x the collecting agent's deterministic test return, and the medium one
lies within [ratio, 1 / ratio] x its target (``medium_fraction`` x that return). Otherwise nothing is
written and the error gives both numbers. The reference returns come from the environment's
references file (``collect --references``) or are measured by the stage.

Optional exploration noise adds ``N(0, (noise * scale)^2)`` per latent dimension to the
behaviour action and clips to the bounds; the stored action is the one executed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from slate_rl.core.artifacts import QUALITIES, TEST_SEED, TEST_SESSIONS, agent_checkpoint, check_environment
from slate_rl.core.errors import ArtifactError, ConfigError
from slate_rl.core.io import file_sha256, read_resume_checkpoint
from slate_rl.core.stats import mean_ci
from slate_rl.data.d4rl import OfflineDataset, build_arrays, load_dataset
from slate_rl.data.logs import load_logs
from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.rankers import GeMSRanker
from slate_rl.offline.config import OfflineDataConfig
from slate_rl.online.base import Agent
from slate_rl.online.registry import agent_from_checkpoint
from slate_rl.online.rollouts import Mode, policy_returns, run_agent_sessions, user_keys
from slate_rl.online.sac import SAC
from slate_rl.sim.config import env_record
from slate_rl.sim.protocol import Simulator


class NoisyPolicy(Agent):
    """A SAC+GeMS behaviour policy with Gaussian exploration noise on its latent action: one std for every session,
    or (``noise`` a sequence of levels) one level per session, drawn uniformly among them (torch's global
    generator) when the session starts."""

    def __init__(self, agent: SAC, noise: float | Sequence[float]) -> None:
        super().__init__()
        self.inner = agent
        self.noise = float(noise) if isinstance(noise, int | float) else None
        self.levels = None if self.noise is not None else torch.tensor([float(x) for x in noise])  # type: ignore[union-attr]
        self.action_dim = agent.action_dim

    @torch.no_grad()
    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = False,
            privileged: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        r = self.inner.ranker
        if self.levels is None:
            slate, action, hidden = self.inner.act(slates, clicks, hidden, deterministic)
            if self.noise:
                action = r.clip(action + self.noise * r.action_scale * torch.randn_like(action))
                slate = r.rank(action)
            return slate, action, hidden
        inner, std = (None, None) if hidden is None else hidden
        if std is None:  # the session starts: its level
            std = self.levels[torch.randint(len(self.levels), (slates.shape[0],))].to(slates.device)
        slate, action, inner = self.inner.act(slates, clicks, inner, deterministic)
        action = r.clip(action + std[:, None] * r.action_scale * torch.randn_like(action))
        return r.rank(action), action, (inner, std)

    def random_act(self, slates: Tensor, clicks: Tensor, hidden: Any, width: float = 1.0
                   ) -> tuple[Tensor, Tensor, Any]:
        return self.inner.random_act(slates, clicks, hidden, width)


class UniformPolicy(Agent):
    """Uniform random latent actions in the whole action box of ``agent``'s ranker (the random quality's), as
    ``act``: a behaviour :class:`StepMixPolicy` can mix."""

    def __init__(self, agent: SAC) -> None:
        super().__init__()
        self.inner, self.action_dim = agent, agent.action_dim

    @torch.no_grad()
    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = False,
            privileged: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        return self.inner.random_act(slates, clicks, hidden, 1.0)


class StepMixPolicy(Agent):
    """A per-step mixture of two behaviours: each session draws the expert's probability p ~ U(0, 1) when it starts
    (or uses a fixed ``p``), then every step acts with ``expert`` with probability p, else with ``other`` (torch's
    global generator). Both follow the session's whole history, each with its own belief."""

    def __init__(self, expert: Agent, other: Agent, p: float | None = None) -> None:
        super().__init__()
        if expert.action_dim != other.action_dim:
            raise ConfigError(f"a step mixture needs behaviours of one action space, got {expert.action_dim} and "
                              f"{other.action_dim} latent dimensions")
        self.expert, self.other, self.p, self.action_dim = expert, other, p, expert.action_dim

    @torch.no_grad()
    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = False,
            privileged: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        b, device = slates.shape[0], slates.device
        ha, hb, p = (None, None, None) if hidden is None else hidden
        if p is None:  # the session starts: its expert probability
            p = torch.rand(b, device=device) if self.p is None else torch.full((b,), float(self.p), device=device)
        slate_a, action_a, ha = self.expert.act(slates, clicks, ha, deterministic)
        slate_b, action_b, hb = self.other.act(slates, clicks, hb, deterministic)
        pick = (torch.rand(b, device=device) < p)[:, None]
        return torch.where(pick, slate_a, slate_b), torch.where(pick, action_a, action_b), (ha, hb, p)


def behaviour_of(agent: Agent) -> SAC:
    """Check that ``agent`` can produce GeMS latent actions (a SAC+GeMS agent)."""
    if not isinstance(agent, SAC) or not isinstance(agent.ranker, GeMSRanker):
        raise ConfigError("offline datasets need a SAC+GeMS behaviour agent (offline_data.behaviour: sac_gems)")
    return agent


def load_behaviour(path: str | os.PathLike[str], sim: Simulator, gems: GeMSRanker,
                   env: str | None = None) -> tuple[SAC, dict[str, Any]]:
    """A trained SAC+GeMS agent, rebuilt from its checkpoint alone (the settings stored in it), on the simulator's
    device, and its metadata; with ``env``, one made for another environment is refused."""
    c = sim.config
    agent, meta = agent_from_checkpoint(path, sim.items, c.num_items, c.slate_size, c.episode_length, gems=gems)
    if env is not None:
        check_environment(path, meta, env, env_record(c), "agent checkpoint")
    return behaviour_of(agent), meta


def check_label(quality: str, behaviour: Mapping[str, float], random: Mapping[str, float],
                expert: Mapping[str, float], settings: OfflineDataConfig, medium_fraction: float | None = None) -> None:
    """Refuse an ``expert`` or ``medium`` dataset whose label would be false. Returns are (mean, ci) on the test
    users: ``random`` is uniform random latent actions, ``expert`` the collecting agent's deterministic action.
    Both must beat random by ``label_margin``; the expert behaviour must reach ``label_ratio`` x ``expert``; the
    medium one must lie within [ratio, 1 / ratio] x its target, ``medium_fraction`` x ``expert``."""
    if quality not in ("expert", "medium"):
        return
    got = f"the {quality} behaviour returns {behaviour['mean']:.2f} +- {behaviour['ci']:.2f} on the test users"
    tail = "; the dataset would be mislabelled and was not written. "
    margin, ratio = settings.label_margin, settings.label_ratio
    need = random["mean"] * (1.0 + margin)
    if behaviour["mean"] <= need:
        raise ArtifactError(
            f"{got}, not above the random-quality return {random['mean']:.2f} +- {random['ci']:.2f} by the margin "
            f"{margin:g} (needs > {need:.2f}){tail}Train the agent longer, collect with its deterministic action "
            "(offline_data.deterministic: true) or less noise (offline_data.noise), or change "
            "offline_data.label_margin"
        )
    if quality == "expert" and behaviour["mean"] < ratio * expert["mean"]:
        raise ArtifactError(
            f"{got}, below {ratio:g} x the collecting agent's deterministic test return {expert['mean']:.2f} +- "
            f"{expert['ci']:.2f} (needs >= {ratio * expert['mean']:.2f}){tail}Collect with less noise "
            "(offline_data.noise) or the deterministic action (offline_data.deterministic: true), or change "
            "offline_data.label_ratio"
        )
    if quality == "medium":
        if medium_fraction is None:
            raise ArtifactError(f"{got}, but its checkpoint records no medium_fraction (not a medium.ckpt of "
                                "train-agent); pass the online run's medium.ckpt")
        target = medium_fraction * expert["mean"]
        low, high = ratio * target, target / ratio
        if not low <= behaviour["mean"] <= high:
            raise ArtifactError(
                f"{got}, outside [{low:.2f}, {high:.2f}] = [{ratio:g}, 1/{ratio:g}] x its target {target:.2f} "
                f"({medium_fraction:g} x the collecting agent's deterministic test return {expert['mean']:.2f})"
                f"{tail}Validate the online run more often (online.val_interval) so that a snapshot lands near the "
                "target, or change online.medium_fraction or offline_data.label_ratio"
            )


SWEPT_QUALITIES = ("step_mix", "noise_sweep")
"""The qualities whose behaviour varies by level from session to session (module doc)."""
STEP_MIX_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The expert probabilities at which the ``step_mix`` behaviour's return is measured on the test users."""


def check_spread(quality: str, by_level: Sequence[Mapping[str, float]], settings: OfflineDataConfig) -> None:
    """Refuse a ``step_mix`` or ``noise_sweep`` dataset whose behaviour's return does not vary with its level: the
    best level must return more than (1 + ``label_margin``) x the worst on the test users, else a condition on the
    return would have nothing to select and the label would be false."""
    best = max(by_level, key=lambda r: r["mean"])
    worst = min(by_level, key=lambda r: r["mean"])
    need = (1.0 + settings.label_margin) * worst["mean"]
    if best["mean"] <= need:
        raise ArtifactError(
            f"the {quality} behaviour returns {best['mean']:.2f} at its best level ({best['level']:g}) and "
            f"{worst['mean']:.2f} at its worst ({worst['level']:g}) on the test users, not more than (1 + "
            f"{settings.label_margin:g}) x apart (needs > {need:.2f}); its return does not vary with the level, the "
            "dataset would be mislabelled and was not written. Widen offline_data.sweep_noises, mix with "
            "offline_data.step_mix_other: random, train the agent longer, or change offline_data.label_margin")


def collection_mode(quality: str, deterministic: bool) -> Mode:
    """How the behaviour acts: uniform random latent actions, its mean action, or samples."""
    if quality == "random":
        return "random"
    return "eval" if deterministic else "train"


@torch.no_grad()
def encode_beliefs(encoder: BeliefEncoder, slates: Tensor, clicks: Tensor, batch: int = 4096) -> Tensor:
    """Belief after each observation of whole episodes: (E, H+1, k) -> (E, H+1, S)."""
    return torch.cat([encoder(slates[i:i + batch], clicks[i:i + batch]) for i in range(0, slates.shape[0], batch)])


@torch.no_grad()
def collect_episodes(sim: Simulator, policy: Agent, encoder: BeliefEncoder, seed: int, episodes: int, mode: Mode,
                     batch_size: int = 4096, progress: bool = True) -> dict[str, np.ndarray]:
    """``episodes`` sessions of users ``0..episodes-1`` of ``seed``, in the D4RL layout."""
    torch.manual_seed(seed)
    was_training = policy.training
    policy.eval()
    parts: dict[str, list[np.ndarray]] = {"slates": [], "clicks": [], "actions": [], "rewards": [], "beliefs": []}
    with tqdm(total=episodes * sim.config.episode_length, desc=f"collect ({mode})", unit="transition",
              unit_scale=True, disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, episodes, batch_size):
            keys = user_keys(seed, start, min(batch_size, episodes - start), sim.device)
            _, ep = run_agent_sessions(sim, policy, keys, mode)
            assert ep is not None
            beliefs = encode_beliefs(encoder, ep["slates"], ep["clicks"])
            parts["slates"].append(ep["slates"].to(torch.int16).cpu().numpy())
            parts["clicks"].append(ep["clicks"].cpu().numpy())
            parts["actions"].append(ep["actions"].cpu().numpy())
            parts["rewards"].append(ep["rewards"].cpu().numpy())
            parts["beliefs"].append(beliefs.cpu().numpy())
            bar.update(keys.shape[0] * sim.config.episode_length)
    policy.train(was_training)
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return build_arrays(cat["slates"], cat["clicks"], cat["actions"], cat["rewards"], cat["beliefs"])


@torch.no_grad()
def replay_episodes(buffer_state: Mapping[str, Any], encoder: BeliefEncoder, episodes: int,
                    device: torch.device) -> dict[str, np.ndarray]:
    """The last ``episodes`` sessions of an online run's replay buffer (``last.ckpt``'s ``buffer``)."""
    data, size, cursor = buffer_state["data"], int(buffer_state["size"]), int(buffer_state["cursor"])
    if size == 0:
        raise ArtifactError("the online run's replay buffer is empty")
    capacity = data["slates"].shape[0]
    order = (torch.arange(size) + cursor) % capacity if size == capacity else torch.arange(size)
    order = order[-episodes:]
    slates, clicks = data["slates"][order].to(device), data["clicks"][order].to(device)
    beliefs = encode_beliefs(encoder, slates, clicks)
    return build_arrays(slates.to(torch.int16).cpu().numpy(), clicks.cpu().numpy(), data["actions"][order].numpy(),
                        data["rewards"][order].numpy(), beliefs.cpu().numpy())


def mix_datasets(parts: list[tuple[OfflineDataset, int]]) -> dict[str, np.ndarray]:
    """Concatenate the first ``n`` episodes of each dataset (which must share env, GeMS and encoder)."""
    first = parts[0][0].metadata
    for ds, n in parts:
        for field in ("env", "gems_sha256", "obs_dim", "action_dim", "episode_length"):
            if ds.metadata[field] != first[field]:
                raise ArtifactError(f"{ds.path}: field {field!r} differs from {parts[0][0].path}; a mixture needs "
                                    "datasets of one environment, GeMS and state encoder")
        if ds.metadata["state_encoder"]["sha256"] != first["state_encoder"]["sha256"]:
            raise ArtifactError(f"{ds.path}: field 'state_encoder' differs from {parts[0][0].path}")
        if n > ds.num_episodes:
            raise ConfigError(f"the mixture takes {n} episodes from {ds.path}, which has {ds.num_episodes}")
    eps = [(ds.episodes(), n) for ds, n in parts]
    cat = {k: np.concatenate([e[k][:n] for e, n in eps]) for k in eps[0][0]}
    return build_arrays(cat["slates"], cat["clicks"], cat["actions"], cat["rewards"], cat["observations"])


def mixture_counts(weights: Mapping[str, float], episodes: int) -> dict[str, int]:
    """Episodes per component of a mixture: ``episodes`` split by ``weights`` (largest remainders)."""
    if not weights:
        raise ConfigError("a mixture needs at least one component")
    if not all(math.isfinite(w) and w > 0 for w in weights.values()):
        raise ConfigError(f"mixture weights must be finite numbers > 0, got {dict(weights)}")
    total = sum(weights.values())
    raw = {k: episodes * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[: episodes - sum(counts.values())]:
        counts[k] += 1
    return counts


@torch.no_grad()
def relabel_actions(ranker: GeMSRanker, slates: np.ndarray | Tensor, clicks: np.ndarray | Tensor,
                    batch: int = 65536) -> np.ndarray:
    """Latent actions of another GeMS for logged (slate, clicks) pairs: its encoder mean.

    A method that uses a GeMS other than the dataset's must train on these actions and act through
    that GeMS's decoder. ``slates``/``clicks`` are (N, k) (the dataset's raw history).
    """
    device = ranker.action_center.device
    out = []
    for i in range(0, len(slates), batch):
        s = torch.as_tensor(np.asarray(slates[i:i + batch]), device=device).long()
        c = torch.as_tensor(np.asarray(clicks[i:i + batch]), device=device).float()
        out.append(ranker.encode(s, c).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, ranker.action_dim), dtype=np.float32)


# ------------------------------------------------------------------------------- building one dataset
@dataclass(frozen=True)
class DatasetRequest:
    """What the ``collect`` stage asks for: one dataset of one quality (or a mixture)."""

    env: str
    """Environment name (recorded, and checked against mixture components)."""
    quality: str
    """expert, medium, random, replay, logged, step_mix, noise_sweep, or the name of a mixture."""
    gems: str
    """The GeMS checkpoint whose latent space the actions live in."""
    expert: str
    """The behaviour agent's best.ckpt: the expert and the state encoder of every quality."""
    behaviour: str | None = None
    """The checkpoint acting for ``medium``, and mixed with the expert by ``step_mix`` (the run's medium.ckpt)."""
    replay: str | None = None
    """The run's final training state (``replay``); default: last.ckpt beside ``expert``."""
    logs: str | None = None
    """The logged sessions (``logged``): data/logs/{env}.npz."""
    mix: tuple[str, ...] = ()
    """``PATH=WEIGHT`` components of a mixture."""
    settings: OfflineDataConfig = dataclasses.field(default_factory=OfflineDataConfig)
    """Episodes, seed, noise, label check and batch size (config.yaml's ``offline_data``, validated there)."""
    test_seed: int = TEST_SEED
    """Users measuring the behaviour (and the label check)."""
    test_sessions: int = TEST_SESSIONS
    references: Mapping[str, Mapping[str, Any]] | None = None
    """The reference policies on the same test users (``expert``: the expert acting as during collection,
    ``expert_deterministic``, ``random``; :mod:`slate_rl.offline.evaluation`): required for expert and medium,
    whose labels they check; the expert's behaviour return is its ``expert`` entry."""

    def __post_init__(self) -> None:
        if self.mix and self.quality in QUALITIES:
            raise ConfigError(f"--mix builds a mixture; give it its own name, not {self.quality!r}")
        if self.quality == "medium" and not self.behaviour:
            raise ConfigError("--quality medium needs --behaviour (the online run's medium.ckpt)")
        if self.quality == "step_mix" and self.settings.step_mix_other == "medium" and not self.behaviour:
            raise ConfigError("--quality step_mix mixes the expert with the medium behaviour: it needs --behaviour "
                              "(the online run's medium.ckpt), or --step-mix-other random")
        if self.quality == "logged" and not self.logs:
            raise ConfigError("--quality logged needs --logs (the logged sessions, data/logs/{env}.npz)")
        if not self.mix and self.quality not in QUALITIES:
            raise ConfigError(f"unknown quality {self.quality!r}: {', '.join(QUALITIES)}, or a mixture with --mix")


def quality_seed(seed: int, quality: str) -> int:
    """Users of each quality differ (a mixture of two qualities never repeats a user)."""
    return seed * 1_000_003 + zlib.crc32(quality.encode()) % 1_000_003


def parse_mixture(items: tuple[str, ...] | list[str]) -> dict[str, float]:
    """``PATH=WEIGHT`` strings -> {path: weight}; a malformed one is one ConfigError."""
    weights = {}
    for item in items:
        path, _, weight = item.rpartition("=")
        if not path:
            raise ConfigError(f"--mix expects PATH=WEIGHT, got {item!r}")
        try:
            weights[path] = float(weight)
        except ValueError:
            raise ConfigError(f"--mix expects PATH=WEIGHT with a number as weight, got {item!r}") from None
        if not (math.isfinite(weights[path]) and weights[path] > 0):
            raise ConfigError(f"--mix weights must be finite numbers > 0, got {item!r}")
    return weights


def _mixture(req: DatasetRequest, sim: Simulator, gems_sha: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    parts = [(load_dataset(path, expect_gems_sha256=gems_sha, expect_env=req.env,
                           expect_env_config=env_record(sim.config)), n)
             for path, n in mixture_counts(parse_mixture(req.mix), req.settings.episodes).items()]
    return mix_datasets(parts), {"mixture": [{"dataset": str(ds.path), "quality": ds.metadata["quality"],
                                              "episodes": n, "sha256": file_sha256(ds.path)} for ds, n in parts]}


def _replay(req: DatasetRequest, sim: Simulator, encoder: BeliefEncoder) -> tuple[dict[str, np.ndarray],
                                                                                   dict[str, Any]]:
    last = Path(req.replay) if req.replay else Path(agent_checkpoint("last", str(Path(req.expert).parent)))
    if not last.is_file():
        raise ArtifactError(f"{last}: the online run's final training state (replay buffer) is missing; rerun the "
                            "online agent rule to rebuild it")
    payload = read_resume_checkpoint(last)
    if "buffer" not in payload:
        raise ArtifactError(f"{last}: field 'buffer' missing; this is not an online run's training state")
    arrays = replay_episodes(payload["buffer"], encoder, req.settings.episodes, sim.device)
    return arrays, {"checkpoint": str(last), "sha256": file_sha256(last), "source": "training replay buffer"}


@torch.no_grad()
def _logged(req: DatasetRequest, sim: Simulator, gems: GeMSRanker, encoder: BeliefEncoder
            ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The first ``episodes`` logged sessions: states from the expert's actor GRU, actions the GeMS encoder's mean
    of each shown (slate, clicks) (:func:`relabel_actions`), clipped to the GeMS box; rewards the clicks. The
    metadata says how many actions were clipped and how often an action decodes back to its logged slate."""
    assert req.logs is not None
    c = sim.config
    logs = load_logs(req.logs, num_items=c.num_items)
    env = logs.metadata.get("env")
    if env != req.env:
        raise ArtifactError(f"{req.logs}: field 'metadata.env' is {env!r}, not {req.env!r}; pass that environment's "
                            "logs (data/logs/{env}.npz)")
    if logs.episode_length != c.episode_length or logs.slates.shape[2] != c.slate_size:
        raise ArtifactError(f"{req.logs}: sessions of {logs.episode_length} steps of {logs.slates.shape[2]} items, "
                            f"the environment has {c.episode_length} of {c.slate_size}; pass its own logs")
    n = req.settings.episodes
    if n > logs.num_sessions:
        raise ConfigError(f"--episodes {n}: {req.logs} holds {logs.num_sessions} sessions; collect at most that many")
    slates = np.concatenate([logs.reset_slates[:n, None], logs.slates[:n]], axis=1)
    clicks = np.concatenate([logs.reset_clicks[:n, None], logs.clicks[:n]], axis=1)
    raw = relabel_actions(gems, slates[:, 1:].reshape(-1, c.slate_size), clicks[:, 1:].reshape(-1, c.slate_size))
    actions = gems.clip(torch.from_numpy(raw).to(sim.device))
    decoded = torch.cat([gems.rank(chunk) for chunk in actions.split(8192)]).cpu().numpy()
    shown = slates[:, 1:].reshape(-1, c.slate_size).astype(np.int64)
    beliefs = encode_beliefs(encoder, torch.from_numpy(slates.astype(np.int64)).to(sim.device),
                             torch.from_numpy(clicks).to(sim.device))
    rewards = clicks[:, 1:].sum(axis=2, dtype=np.float32)
    arrays = build_arrays(slates, clicks, actions.cpu().numpy().reshape(n, c.episode_length, -1), rewards,
                          beliefs.cpu().numpy())
    logs_config = logs.metadata.get("logs_config") or {}
    return arrays, {"source": "logged sessions", "logs": str(req.logs), "sha256": file_sha256(req.logs),
                    "logging_policy": logs.metadata.get("policy"), "logs_epsilon": logs_config.get("epsilon"),
                    "actions": "GeMS encoder mean of each shown (slate, clicks), clipped to the GeMS box",
                    "clipped_fraction": float((actions.cpu().numpy() != raw).mean()),
                    "decoded_slate_match": float((decoded == shown).all(axis=1).mean()),
                    "decoded_slot_match": float((decoded == shown).mean())}


def _returns(sim: Simulator, policy: Agent, seed: int, sessions: int, mode: Mode) -> np.ndarray:
    torch.manual_seed(seed)  # sampled actions and noise of the measurement: reproducible
    return policy_returns(sim, policy, seed, sessions, mode).cpu().numpy()


def _collected(req: DatasetRequest, sim: Simulator, gems: GeMSRanker, expert: SAC, expert_meta: dict[str, Any],
               progress: bool) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """Episodes of a behaviour (expert, medium, random, step_mix or noise_sweep); the label of expert and medium
    checked against the random quality, that of step_mix and noise_sweep by the spread of its levels' returns."""
    cfg = req.settings
    mode = collection_mode(req.quality, cfg.deterministic)
    mixes_medium = req.quality == "step_mix" and cfg.step_mix_other == "medium"
    path = req.behaviour if (req.quality == "medium" or mixes_medium) and req.behaviour else req.expert
    policy, meta = (expert, expert_meta) if path == req.expert else load_behaviour(path, sim, gems, req.env)
    levels: dict[float, Agent] = {}
    if req.quality == "noise_sweep":
        actor: Agent = NoisyPolicy(expert, cfg.sweep_noises)
        levels = {x: NoisyPolicy(expert, x) for x in cfg.sweep_noises}
    elif req.quality == "step_mix":  # the expert acts too: its checkpoint is the behaviour's, the medium the other
        best = NoisyPolicy(expert, cfg.noise)
        other = NoisyPolicy(policy, cfg.noise) if mixes_medium else UniformPolicy(expert)
        actor = StepMixPolicy(best, other)
        levels = {p: StepMixPolicy(best, other, p) for p in STEP_MIX_LEVELS}
        other_path, path, meta = (path if mixes_medium else None), req.expert, expert_meta
    else:
        actor = NoisyPolicy(policy, cfg.noise) if mode != "random" else policy
    refs = req.references
    labelled = req.quality in ("expert", "medium")
    if labelled and refs is None:
        raise ConfigError(f"the {req.quality} quality needs the reference policies (DatasetRequest.references) to "
                          "check its label")
    if req.quality == "expert" and refs is not None:  # measured exactly so: the expert, its collection mode
        returns = _from_reference(refs["expert"])
    else:
        returns = _summary(_returns(sim, actor, req.test_seed, req.test_sessions, mode))
    checks: dict[str, Any] = {}
    if levels:
        by_level = [{"level": x, **_summary(_returns(sim, p, req.test_seed, req.test_sessions, mode))}
                    for x, p in levels.items()]
        if cfg.label_check:
            check_spread(req.quality, by_level, cfg)
        checks = {"level": "expert_probability" if req.quality == "step_mix" else "noise",
                  "returns_by_level": by_level,
                  **({"other": cfg.step_mix_other, "other_checkpoint": other_path} if req.quality == "step_mix"
                     else {"noises": cfg.sweep_noises})}
    if labelled:
        assert refs is not None
        random, agent = _from_reference(refs["random"]), _from_reference(refs["expert_deterministic"])
        fraction = meta.get("medium_fraction") if req.quality == "medium" else None
        if cfg.label_check:
            check_label(req.quality, _mean_ci(returns), _mean_ci(random), _mean_ci(agent), cfg, fraction)
        checks = {"random_quality_return": {"mean": random["mean"], "ci95": random["ci95"]},
                  "agent_deterministic_return": {"mean": agent["mean"], "ci95": agent["ci95"]},
                  "label_ratio": cfg.label_ratio,
                  **({"medium_fraction": fraction} if req.quality == "medium" else {})}
    arrays = collect_episodes(sim, actor, expert.actor_belief, quality_seed(cfg.seed, req.quality), cfg.episodes,
                              mode, cfg.batch_size, progress=progress)
    behaviour = {"checkpoint": str(path), "sha256": file_sha256(path), "mode": mode, "noise": cfg.noise,
                 "step": meta.get("step"), "val_return": meta.get("val_return"), **checks,
                 "label_margin": cfg.label_margin, "label_checked": cfg.label_check}
    return arrays, behaviour, returns


def _from_reference(ref: Mapping[str, Any]) -> dict[str, Any]:
    """A reference policy's summary (``return_mean``, ...) in the metadata's layout (``mean``, ...)."""
    return {"mean": ref["return_mean"], "ci95": ref["return_ci95"], "std": ref["return_std"], "n": ref["n_sessions"]}


def _mean_ci(summary: Mapping[str, Any]) -> dict[str, float]:
    return {"mean": summary["mean"], "ci": summary["ci95"]}


def _summary(values: np.ndarray) -> dict[str, Any]:
    s = mean_ci(values)
    return {"mean": s["mean"], "ci95": s["ci"], "std": s["std"], "n": s["n"]}


def build_dataset(req: DatasetRequest, sim: Simulator, gems: GeMSRanker, table_source: dict[str, Any],
                  progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and metadata of the dataset ``req`` asks for (see the module docstring for the qualities)."""
    c = sim.config
    expert, expert_meta = load_behaviour(req.expert, sim, gems, req.env)
    gems_sha = file_sha256(req.gems)
    # The online seed whose agent collects (config.yaml's offline_data.behaviour_seed picks the run).
    behaviour: dict[str, Any] = {"agent": expert.build.get("agent"), "agent_seed": expert_meta.get("seed")}
    returns_online = None
    if req.mix:
        arrays, extra = _mixture(req, sim, gems_sha)
    elif req.quality == "replay":
        arrays, extra = _replay(req, sim, expert.actor_belief)
    elif req.quality == "logged":
        arrays, extra = _logged(req, sim, gems, expert.actor_belief)
    else:
        arrays, extra, returns_online = _collected(req, sim, gems, expert, expert_meta, progress)
    behaviour.update(extra)
    episodes = arrays["reset_slates"].shape[0]
    dataset_return = _summary(arrays["rewards"].reshape(episodes, -1).sum(axis=1, dtype=np.float64))
    if returns_online is not None:
        behaviour_return = {**returns_online,
                            "source": f"online, {req.test_sessions} users of test seed {req.test_seed}"}
    else:
        behaviour_return = {**dataset_return, "source": "dataset"}
    metadata = {
        "env": req.env, "env_config": env_record(c), "quality": req.quality, "episodes": episodes,
        "episode_length": c.episode_length, "slate_size": c.slate_size, "num_items": c.num_items,
        "obs_dim": int(arrays["observations"].shape[1]), "action_dim": int(arrays["actions"].shape[1]),
        "action_center": gems.action_center.cpu().tolist(), "action_scale": gems.action_scale.cpu().tolist(),
        "gems": str(req.gems), "gems_sha256": gems_sha,
        "behaviour": behaviour, "behaviour_return": behaviour_return, "dataset_return": dataset_return,
        "state_encoder": {"checkpoint": str(req.expert), "sha256": file_sha256(req.expert),
                          "module": "actor_belief", "step": expert_meta.get("step")},
        "seed": req.settings.seed, "user_seed": quality_seed(req.settings.seed, req.quality),
        "test_seed": req.test_seed,
        "item_embeddings": table_source, "device": str(sim.device),
    }
    return arrays, metadata
