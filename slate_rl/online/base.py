"""The interface every online agent follows (and the offline loop reuses).

* ``act(slates, clicks, hidden, deterministic, privileged) -> (slate, action, hidden)``: one
  step for B users from their last observation; ``hidden`` is the agent's recurrent state
  (``None`` at the start of a session); ``action`` is what the replay buffer stores (the
  latent action, or the slate for slate-level agents). ``privileged`` is ``None`` except for
  agents that declare ``privileged = True`` (SlateQ): then it holds the relevance of every item
  for the coming step, from the simulator's true click model.
* ``random_act(slates, clicks, hidden, width=1.0)``: the same with uniformly random actions (warm-up);
  agents acting through a ranker draw them in the middle ``width`` fraction of the action box.
* ``update(episodes) -> dict[str, float]``: one gradient step on a batch of whole episodes
  (sampled from the replay buffer, or the episodes just collected when ``on_policy``).
* ``state_dict()`` / ``load_state_dict()``: networks, optimisers (``optimizers()``) and
  counters (buffers).

An agent is built by its registration's builder (:class:`slate_rl.online.config.AgentKind`) from the
:class:`AgentInputs` :func:`slate_rl.online.registry.build_agent` gathers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from slate_rl.core.config import Variant
from slate_rl.models.belief import scratch_item_table
from slate_rl.online.config import BeliefTable
from slate_rl.sim.policies import random_slates


@dataclass
class AgentInputs:
    """What an agent's builder gets: its tag and settings, the environment's sizes, and what it needs."""

    tag: str
    variant: Variant
    config: Any
    """The agent's settings (an instance of its registration's config class)."""
    sim_items: Tensor
    """The simulator's item table (privileged rankers act over it; its device is the agent's)."""
    num_items: int
    slate_size: int
    episode_length: int
    belief_table: BeliefTable
    gems: Any = None
    """The GeMS ranker (:class:`~slate_rl.models.rankers.GeMSRanker`) of an agent that needs ``gems``."""
    mf_items: Tensor | None = None
    """The MF item table of an agent that needs ``mf``."""
    click_model: Any = None
    """The simulator's click model (:class:`~slate_rl.online.slateq.ClickModel`) of one that needs ``click_model``."""

    @property
    def item_dim(self) -> int:
        return int(self.sim_items.shape[1])

    def encoder_table(self, ranker_table: Tensor | None) -> Tensor | None:
        """The item table the agent's belief encoders start from: with ``belief_table`` ``scratch`` (the published
        code) a fresh N(0, 1) draw from torch's global generator, whatever the ranker; with ``ranker``
        ``ranker_table`` (``None``: the encoder draws its own)."""
        if self.belief_table == "scratch":
            return scratch_item_table(self.num_items, self.item_dim, self.sim_items.device)
        return ranker_table


def first_clicks(slates: Tensor, clicks: Tensor) -> tuple[Tensor, Tensor]:
    """(..., k) slates and clicks -> (mask of observations with a click, item at the first clicked rank)."""
    any_click = clicks.any(dim=-1)
    first = clicks.long().argmax(dim=-1, keepdim=True)
    return any_click, slates.gather(-1, first).squeeze(-1)


class Agent(nn.Module):
    """Base class: subclasses implement ``act``, ``random_act``, ``update`` and ``optimizers``."""

    name = "agent"
    action_dim: int
    on_policy = False
    """True for agents that learn from the episodes they just collected (no replay)."""
    on_policy_warmup = False
    """For on-policy agents: act randomly during the warm-up too, and learn from those sessions (the
    published loop does this for REINFORCE); off-policy agents always warm up without learning."""
    privileged = False
    """True for agents that use the simulator's click model (relevances, click probabilities)."""
    own_ranker = False
    """True when the agent's ranker is its own (e.g. SAC+WkNN's k-NN table copied from its scratch table), not an
    artifact the caller gives: a checkpoint then restores the ranker too."""
    build: dict[str, Any] = {}
    """How the agent was built (tag, config section, belief table): set by
    :func:`slate_rl.online.registry.build_agent`, stored in its checkpoints, so that a checkpoint alone rebuilds
    the agent."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {"modules": super().state_dict(*args, **kwargs),
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers().items()}}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        result = super().load_state_dict(state["modules"], strict=strict, assign=assign)
        for name, opt in self.optimizers().items():
            opt.load_state_dict(state["optimizers"][name])
        return result

    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = False,
            privileged: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        raise NotImplementedError

    def random_act(self, slates: Tensor, clicks: Tensor, hidden: Any, width: float = 1.0
                   ) -> tuple[Tensor, Tensor, Any]:
        raise NotImplementedError

    def buffer_extras(self) -> dict[str, tuple[int, ...]]:
        """Extra per-step fields this agent needs in the replay buffer (see EpisodeBuffer)."""
        return {}

    def update(self, episodes: dict[str, Tensor]) -> dict[str, float]:
        raise NotImplementedError


class SlateAgent(Agent):
    """Agents that choose slates directly (no ranker): the stored action is the slate itself."""

    num_items: int
    slate_size: int

    def random_slates(self, batch: int, device: torch.device) -> Tensor:
        """Uniformly random slates (k distinct items), drawn from torch's global generator."""
        keys = torch.randint(-(2**62), 2**62, (batch,), device=device)
        return random_slates(keys, 0, self.num_items, self.slate_size)

    @torch.no_grad()
    def random_act(self, slates: Tensor, clicks: Tensor, hidden: Any, width: float = 1.0
                   ) -> tuple[Tensor, Tensor, Any]:
        slate = self.random_slates(slates.shape[0], slates.device)
        return slate, slate.float(), hidden
