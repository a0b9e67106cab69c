"""Registry of the offline algorithms: names, config classes and one constructor."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from slate_rl.core.errors import ConfigError
from slate_rl.offline.algo import OfflineAlgo
from slate_rl.offline.bc import BC, BCConfig
from slate_rl.offline.cql import CQL, CQLConfig
from slate_rl.offline.iql import IQL, IQLConfig
from slate_rl.offline.td3bc import TD3BC, TD3BCConfig

ALGOS = ("td3bc", "cql", "iql", "bc")
ALGO_CONFIGS: dict[str, type] = {"td3bc": TD3BCConfig, "cql": CQLConfig, "iql": IQLConfig, "bc": BCConfig}
_CLASSES: dict[str, type[OfflineAlgo]] = {"td3bc": TD3BC, "cql": CQL, "iql": IQL, "bc": BC}


def make_algo(name: str, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float,
              total_steps: int, configs: dict[str, Any] | None = None) -> OfflineAlgo:
    """Build algorithm ``name`` with its config from ``configs`` (defaults when absent).

    ``total_steps`` is the number of updates of the run (IQL's cosine actor schedule).
    """
    if name not in _CLASSES:
        raise ConfigError(f"unknown offline algorithm {name!r}; choose one of {', '.join(ALGOS)}")
    config = (configs or {}).get(name) or ALGO_CONFIGS[name]()
    if not isinstance(config, ALGO_CONFIGS[name]):
        raise ConfigError(f"the config of {name} must be a {ALGO_CONFIGS[name].__name__}, got {type(config).__name__}")
    cls: Any = _CLASSES[name]
    algo: OfflineAlgo = cls(obs_dim, action_center, action_scale, gamma, total_steps, config)
    return algo
