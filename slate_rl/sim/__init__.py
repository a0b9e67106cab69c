"""TopicRec simulator: batched torch core, Gymnasium wrappers, reference policies, presets.

Importing this package registers the Gymnasium ids (a dictionary entry; no other work):
``gymnasium.make("slate_rl/TopicRec-v0", env="focused_topdown")`` and
``gymnasium.make_vec("slate_rl/TopicRec-v0", num_envs=1024, vectorization_mode="vector_entry_point")``.
"""

from __future__ import annotations

import gymnasium

from slate_rl.sim.config import PRESETS, TopicRecConfig, make_env_config

ENV_ID = "slate_rl/TopicRec-v0"

__all__ = ["ENV_ID", "PRESETS", "TopicRecConfig", "make_env_config"]

if ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=ENV_ID,
        entry_point="slate_rl.sim.gym_env:TopicRecEnv",
        vector_entry_point="slate_rl.sim.gym_env:TopicRecVectorEnv",
        max_episode_steps=None,
        disable_env_checker=False,
    )
