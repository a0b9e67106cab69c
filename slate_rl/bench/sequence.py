"""Sequence methods: update throughput, decision latency, and return conditioning of a trained policy.

``slate-rl bench sequence`` measures, on synthetic sessions (100 steps, 20-d states, 32-d latent
actions, 10k sessions) and the same device and threads:

* Decision Transformer update steps/s (:class:`~slate_rl.offline.dt.DecisionTransformer`, CORL's
  settings) against an eager reference loop in the style of CORL's ``dt.py``, written below: a
  ``nn.MultiheadAttention`` transformer with the explicit causal and key-padding masks, windows cut
  per sample in numpy (``random.randint`` start, ``np.pad``) and stacked on the host each step, the
  batch copied to the device, plain AdamW, ``.item()`` on the logged loss. Both sides alternate for
  ``rounds`` rounds; each keeps its best round (a shared machine penalises neither side);
* Decision Diffuser update steps/s (one optimizer step = 2 accumulated micro-batches of 32);
* decision latency, ms per step for ``users`` users in parallel: DT, DD with the full chain
  (``diffusion_steps`` ancestral steps) and DD strided (``sampling_steps`` DDIM steps). One DD
  decision is that many calls of the guided U-Net on the same shapes; the full chain is timed over
  ``dd_calls`` calls and scaled (stated in the row), the strided one is timed whole.

``slate-rl bench conditioning`` evaluates a trained DT/DD policy on the fixed test users at several
target returns (and optionally several DD sampling settings) and prints the table.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slate_rl.bench.offline import steps_per_second
from slate_rl.bench.shapes import ACTION_DIM, HORIZON, OBS_DIM
from slate_rl.core.errors import ArtifactError, ConfigError
from slate_rl.core.io import file_sha256
from slate_rl.core.stats import mean_ci
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.models.rankers import load_gems_ranker
from slate_rl.offline.config import check_target
from slate_rl.offline.datasets import load_behaviour
from slate_rl.offline.dd import DDConfig, DecisionDiffuser
from slate_rl.offline.dt import DecisionTransformer, DTConfig
from slate_rl.offline.policy import OfflinePolicy, read_policy
from slate_rl.offline.registry import ALGO_CONFIGS, algo_from_policy, family, make_algo
from slate_rl.offline.sequence import SequenceAlgo, SessionSpec
from slate_rl.online.rollouts import policy_returns
from slate_rl.sim.protocol import Simulator


def synthetic_sessions(episodes: int, device: torch.device) -> EpisodeBuffer:
    g = torch.Generator().manual_seed(0)
    buf = EpisodeBuffer(episodes, HORIZON, 10, ACTION_DIM, device,
                        extras={"observations": (OBS_DIM,), "next_observations": (OBS_DIM,)})
    states = torch.randn(episodes, HORIZON + 1, OBS_DIM, generator=g)
    buf.add({"slates": torch.randint(0, 1000, (episodes, HORIZON + 1, 10), generator=g),
             "clicks": torch.rand(episodes, HORIZON + 1, 10, generator=g) < 0.2,
             "actions": torch.rand(episodes, HORIZON, ACTION_DIM, generator=g) * 2 - 1,
             "rewards": torch.randint(0, 4, (episodes, HORIZON), generator=g).float(),
             "observations": states[:, :-1], "next_observations": states[:, 1:]})
    return buf


# ----------------------------------------------------------------------------------------------
# The reference: CORL dt.py-style eager code
# ----------------------------------------------------------------------------------------------
class CorlBlock(nn.Module):
    def __init__(self, seq_len: int, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.drop = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.Dropout(dropout)
        self.attention = nn.MultiheadAttention(dim, heads, dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))
        self.causal_mask: torch.Tensor
        self.register_buffer("causal_mask", ~torch.tril(torch.ones(seq_len, seq_len)).to(torch.bool))

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        h = self.norm1(x)
        out = self.attention(h, h, h, attn_mask=self.causal_mask[:n, :n], key_padding_mask=padding_mask,
                             need_weights=False)[0]
        x = x + self.drop(out)
        return x + self.mlp(self.norm2(x))


class CorlDT(nn.Module):
    def __init__(self, cfg: DTConfig) -> None:
        super().__init__()
        d, n = cfg.embedding_dim, cfg.context
        self.emb_drop, self.emb_norm, self.out_norm = nn.Dropout(0.1), nn.LayerNorm(d), nn.LayerNorm(d)
        self.timestep_emb = nn.Embedding(HORIZON + n, d)
        self.state_emb, self.action_emb, self.return_emb = nn.Linear(OBS_DIM, d), nn.Linear(ACTION_DIM, d), \
            nn.Linear(1, d)
        self.blocks = nn.ModuleList([CorlBlock(3 * n, d, cfg.heads, 0.1) for _ in range(cfg.layers)])
        self.action_head = nn.Sequential(nn.Linear(d, ACTION_DIM), nn.Tanh())

    def forward(self, states: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor, time_steps: torch.Tensor,
                padding_mask: torch.Tensor) -> torch.Tensor:
        b, n = states.shape[:2]
        t = self.timestep_emb(time_steps)
        seq = torch.stack([self.return_emb(returns.unsqueeze(-1)) + t, self.state_emb(states) + t,
                           self.action_emb(actions) + t], dim=1).permute(0, 2, 1, 3).reshape(b, 3 * n, -1)
        mask = torch.stack([padding_mask] * 3, dim=1).permute(0, 2, 1).reshape(b, 3 * n)
        out = self.emb_drop(self.emb_norm(seq))
        for block in self.blocks:
            out = block(out, mask)
        return self.action_head(self.out_norm(out)[:, 1::3])


def corl_dt_step(buffer: EpisodeBuffer, cfg: DTConfig, device: torch.device) -> Any:
    """CORL's training iteration: per-sample numpy windows, a host batch, plain AdamW, ``.item()``."""
    trajectories = [{k: buffer.data[k][i].cpu().numpy() for k in ("observations", "actions", "rewards")}
                    for i in range(buffer.size)]
    for traj in trajectories:
        traj["returns"] = np.cumsum(traj["rewards"][::-1])[::-1].copy()
    model = CorlDT(cfg).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                              betas=(cfg.beta1, cfg.beta2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optim, lambda steps: min((steps + 1) / cfg.warmup_steps, 1))
    n = cfg.context

    def window(traj: dict[str, np.ndarray], start: int) -> tuple[np.ndarray, ...]:
        s, a = traj["observations"][start: start + n], traj["actions"][start: start + n]
        r = traj["returns"][start: start + n] * 0.01
        mask = np.hstack([np.ones(s.shape[0]), np.zeros(n - s.shape[0])])
        pad = n - s.shape[0]
        if pad:
            s, a, r = (np.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)) for x in (s, a, r))
        return s, a, r, np.arange(start, start + n), mask

    def step() -> dict[str, float]:
        samples = []
        for _ in range(cfg.batch_size):
            traj = trajectories[random.randrange(len(trajectories))]
            samples.append(window(traj, random.randint(0, traj["rewards"].shape[0] - 1)))
        s, a, r, t, m = (torch.tensor(np.stack(x)).to(device) for x in zip(*samples, strict=True))
        s, a, r = s.float(), a.float(), r.float()
        predicted = model(s, a, r, t.long(), ~m.to(torch.bool))
        loss = (F.mse_loss(predicted, a.detach(), reduction="none") * m.unsqueeze(-1)).mean()
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        optim.step()
        scheduler.step()
        return {"train_loss": loss.item(), "learning_rate": float(scheduler.get_last_lr()[0])}

    return step


def ours_step(algo: SequenceAlgo, buffer: EpisodeBuffer) -> Any:
    algo.fit_dataset(buffer)
    generator = torch.Generator().manual_seed(0)

    def step() -> dict[str, torch.Tensor]:
        return algo.update(algo.sample(buffer, algo.batch_windows, generator))

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn: Any, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def decision_ms(algo: SequenceAlgo, users: int, device: torch.device, steps: int = 3) -> float:
    """Mean ms of one decision for ``users`` users in parallel (after one warm-up decision)."""
    algo.eval()
    states = torch.randn(users, OBS_DIM, device=device)
    slates = torch.zeros(users, 10, dtype=torch.long, device=device)
    clicks = torch.zeros(users, 10, dtype=torch.bool, device=device)
    rewards = torch.zeros(users, device=device)
    ctx = algo.begin(users)
    with torch.no_grad():
        algo.step(ctx, states, slates, clicks, rewards)
        return 1000 * _seconds(lambda: [algo.step(ctx, states, slates, clicks, rewards) for _ in range(steps)],
                               device) / steps


def run_benchmark(device: torch.device, min_seconds: float, users: int = 500, rounds: int = 3,
                  dt: DTConfig | None = None, dd: DDConfig | None = None, dd_calls: int = 5,
                  strided: int = 20, episodes: int = 10_000) -> list[dict[str, Any]]:
    dt, dd = dt or DTConfig(), dd or DDConfig()
    buffer = synthetic_sessions(episodes, device)
    center, scale = torch.zeros(ACTION_DIM, device=device), torch.ones(ACTION_DIM, device=device)
    session = SessionSpec(HORIZON, 1000, 10)
    rows: list[dict[str, Any]] = []
    torch.manual_seed(0)
    random.seed(0)
    dt_algo = make_algo("dt", OBS_DIM, center, scale, 0.99, dt.total_steps, {"dt": dt}, session).to(device)
    assert isinstance(dt_algo, DecisionTransformer)
    ours, ref = ours_step(dt_algo, buffer), corl_dt_step(buffer, dt, device)
    for _ in range(3):
        ours()
        ref()
    rates: dict[str, list[float]] = {"ours": [], "ref": []}
    for _ in range(rounds):
        rates["ours"].append(steps_per_second(ours, device, min_seconds / rounds))
        rates["ref"].append(steps_per_second(ref, device, min_seconds / rounds))
    best, best_ref = max(rates["ours"]), max(rates["ref"])
    rows.append({"case": "dt update", "value": best, "unit": "updates/s", "reference": best_ref,
                 "ratio": best / best_ref, "note": f"batch {dt.batch_size} x {dt.context} steps; CORL-style "
                 "reference in the same run", "rounds": rates})
    rows.append({"case": "dt decision", "value": decision_ms(dt_algo, users, device), "unit": f"ms/step, {users} users",
                 "reference": float("nan"), "ratio": float("nan"), "note": f"context {dt.context}"})
    dd_algo = make_algo("dd", OBS_DIM, center, scale, 0.99, dd.total_steps, {"dd": dd}, session).to(device)
    assert isinstance(dd_algo, DecisionDiffuser)
    dd_step = ours_step(dd_algo, buffer)
    dd_step()
    rows.append({"case": "dd update", "value": steps_per_second(dd_step, device, min_seconds), "unit": "updates/s",
                 "reference": float("nan"), "ratio": float("nan"),
                 "note": f"{dd.grad_accumulation} x {dd.batch_size} windows of {dd.horizon}, U-Net dim {dd.dim} "
                         f"{list(dd.dim_mults)}"})
    full = replace(dd, sampling_steps=dd.diffusion_steps)
    calls = min(dd_calls, full.sampling_steps)
    per_call = _guided_call_ms(dd_algo, users, device, calls)
    rows.append({"case": f"dd decision, {full.sampling_steps} steps", "value": per_call * full.sampling_steps,
                 "unit": f"ms/step, {users} users", "reference": float("nan"), "ratio": float("nan"),
                 "note": f"{calls} guided U-Net calls timed, x {full.sampling_steps}"})
    dd_algo.cfg = replace(dd, sampling_steps=strided)
    strided_ms = decision_ms(dd_algo, users, device, steps=1)
    rows.append({"case": f"dd decision, {strided} steps", "value": strided_ms, "unit": f"ms/step, {users} users",
                 "reference": per_call * full.sampling_steps, "ratio": per_call * full.sampling_steps / strided_ms,
                 "note": "strided DDIM, timed whole; ratio: speed-up over the full chain"})
    return rows


def _guided_call_ms(algo: DecisionDiffuser, users: int, device: torch.device, calls: int) -> float:
    x = torch.randn(users, algo.cfg.horizon, OBS_DIM, device=device)
    cond = torch.full((users,), 0.9, device=device)
    with torch.no_grad():
        algo._eps(x, 1, cond)
        return 1000 * _seconds(lambda: [algo._eps(x, k, cond) for k in range(calls)], device) / calls


# ----------------------------------------------------------------------------------------------
# Return conditioning of a trained policy
# ----------------------------------------------------------------------------------------------
def parse_targets(text: str) -> list[float]:
    """``"0.5,0.75,1"`` -> [0.5, 0.75, 1.0]; anything that is not a finite number is one ConfigError."""
    out = []
    for item in text.split(","):
        try:
            value: Any = float(item)
        except ValueError:
            value = item.strip()
        out.append(check_target(value, f"target return {item.strip()!r}"))
    if not out:
        raise ConfigError("give at least one target return (e.g. --targets 0.5,0.75,1.0)")
    return out


def relabel_gems(policy_path: str | Path, relabel: Any) -> str:
    """The GeMS checkpoint a relabelled policy decodes with (its metadata's ``relabel.gems``), once its
    sha256 equals the one recorded at training (``relabel.sha256``): the path comes from the file, so a
    replaced or edited checkpoint there must not decode the policy's actions."""
    if not (isinstance(relabel, dict) and isinstance(relabel.get("gems"), str)
            and isinstance(relabel.get("sha256"), str)):
        raise ArtifactError(f"{policy_path}: field 'relabel' must hold the strings 'gems' and 'sha256'; retrain "
                            "the policy")
    gems, recorded = relabel["gems"], relabel["sha256"]
    if not Path(gems).is_file():
        raise ArtifactError(f"{policy_path}: its relabelling GeMS {gems} (field 'relabel.gems') is not found; "
                            "restore it or retrain the policy")
    actual = file_sha256(gems)
    if actual != recorded:
        raise ArtifactError(f"{gems}: sha256 {actual!r}, but {policy_path} was trained with a GeMS of sha256 "
                            f"{recorded!r} (field 'relabel.sha256'); restore that checkpoint or retrain the policy")
    return gems


def load_sequence_policy(path: str | Path, sim: Simulator, gems_path: str, expert_path: str,
                         sampling_steps: int | None = None) -> tuple[OfflinePolicy, dict[str, Any]]:
    """A saved DT/DD policy with its state encoder (the expert's) and decoder (its GeMS, or the GeMS its actions
    were relabelled into)."""
    payload, meta = read_policy(path)
    name = payload.get("algo")
    if name not in ALGO_CONFIGS or family(name) != "sequence":
        sequence = [n for n in ALGO_CONFIGS if family(n) == "sequence"]
        raise ArtifactError(f"{path}: field 'algo' is {name!r}; return conditioning needs a sequence method "
                            f"({', '.join(sequence)})")
    if sampling_steps is not None and name != "dd":
        raise ConfigError("--sampling-steps applies to the Decision Diffuser only")
    c = sim.config
    gems = load_gems_ranker(gems_path, num_items=c.num_items, device=sim.device)
    relabel = meta.get("relabel")
    decoder = load_gems_ranker(relabel_gems(path, relabel), num_items=c.num_items, device=sim.device) \
        if relabel else gems
    expert, _ = load_behaviour(expert_path, sim, gems)
    encoder = expert.actor_belief
    algo, normalizer, _ = algo_from_policy(
        path, decoder.action_center, decoder.action_scale, encoder, SessionSpec(c.episode_length, c.num_items,
                                                                                c.slate_size),
        None if sampling_steps is None else {"sampling_steps": sampling_steps})
    assert isinstance(algo, SequenceAlgo)
    return OfflinePolicy(encoder, decoder, algo, normalizer), meta


def return_conditioning(sim: Simulator, policy: OfflinePolicy, targets: list[float], seed: int, sessions: int
                        ) -> list[dict[str, Any]]:
    """Test return at each target (fixed users ``0..sessions-1`` of ``seed``, the evaluation's).

    The same users and the same simulator seed serve every target, so targets are compared on paired
    sessions: ``vs_previous`` is the mean per-user difference to the previous target and
    ``vs_previous_ci95`` its paired 95% CI half-width; ``worst_vs_lower`` (with ``worst_vs_lower_ci95`` and
    ``worst_vs_lower_target``) is the paired difference to the lower target it is most surely below
    (smallest upper confidence bound). Both are NaN on the first row."""
    rows: list[dict[str, Any]] = []
    seen: list[tuple[float, np.ndarray]] = []
    nan = {"mean": math.nan, "ci": math.nan}
    for target in targets:
        policy.target = target
        torch.manual_seed(seed)
        start = time.perf_counter()
        returns = policy_returns(sim, policy, seed, sessions, "eval").cpu().numpy()
        stats = mean_ci(returns)
        diffs = [(t, mean_ci(returns - r)) for t, r in seen]
        previous = diffs[-1][1] if diffs else nan
        worst_target, worst = min(diffs, key=lambda d: d[1]["mean"] + d[1]["ci"]) if diffs else (math.nan, nan)
        rows.append({"target": target, "return_mean": stats["mean"], "return_ci95": stats["ci"], "n": stats["n"],
                     "vs_previous": previous["mean"], "vs_previous_ci95": previous["ci"],
                     "worst_vs_lower": worst["mean"], "worst_vs_lower_ci95": worst["ci"],
                     "worst_vs_lower_target": worst_target, "seconds": time.perf_counter() - start})
        seen.append((target, returns))
    return rows


def conditioning_verdict(rows: list[dict[str, Any]]) -> str:
    """Whether the returns are non-decreasing in the target: no target's return below a lower target's by a
    paired difference significant at 5% (95% CI entirely below zero); and which consecutive rises are."""
    steps = [r for r in rows[1:] if math.isfinite(r["vs_previous"])]
    drops = [r for r in steps if r["worst_vs_lower"] + r["worst_vs_lower_ci95"] < 0]
    rises = [r for r in steps if r["vs_previous"] - r["vs_previous_ci95"] > 0]
    if drops:
        worst = min(drops, key=lambda r: r["worst_vs_lower"] + r["worst_vs_lower_ci95"])
        return (f"decreasing: the return at target {worst['target']:g} is {-worst['worst_vs_lower']:.2f} +- "
                f"{worst['worst_vs_lower_ci95']:.2f} (paired 95% CI) below target {worst['worst_vs_lower_target']:g}")
    kind = "increasing" if rises else "flat"
    detail = ", ".join(f"+{r['vs_previous']:.2f} +- {r['vs_previous_ci95']:.2f} at {r['target']:g}" for r in rises)
    return f"non-decreasing ({kind}{': ' + detail if detail else ': no paired difference significant at 5%'})"
