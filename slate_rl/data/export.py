"""Interop: export a dataset to Minari (D4RL's maintained successor) or to d3rlpy.

**Minari** (a core dependency, HDF5 storage): one Minari episode per session. Observations are
a ``Dict`` space holding the belief state and the raw history, so nothing is lost:
``{"belief": Box(S), "slate": Box(0, num_items - 1, (k,), int64), "clicks": MultiBinary(k)}``,
with ``H + 1`` entries per episode (the reset observation first, as Minari wants); actions are a
``Box`` with the GeMS bounds; ``terminations`` are all False and ``truncations`` True at the
last step. The D4RL arrays come back with :func:`from_minari` (round trip tested).

**d3rlpy** (optional extra ``pip install 'slate_rl[d3rlpy]'``; d3rlpy 2.8.1 pins
``gymnasium==1.0.0`` and the old ``gym``, so it stays out of the core dependencies):
:func:`to_d3rlpy` builds an ``MDPDataset`` from the belief observations, actions, rewards,
terminals and timeouts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slate_rl.core.errors import ArtifactError, ConfigError
from slate_rl.data.d4rl import OfflineDataset, build_arrays


@contextlib.contextmanager
def _minari_root(root: str | os.PathLike[str]) -> Iterator[None]:
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(root).resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def minari_id(env: str, quality: str) -> str:
    """Minari dataset id of a slate_rl dataset: ``slate_rl/{env}-{quality}-v0`` (ids allow no ``_``
    in the version part; names keep theirs)."""
    return f"slate_rl/{env}-{quality}-v0"


def minari_env_spec(metadata: dict[str, Any]) -> Any:
    """The Gymnasium spec of the environment a dataset was collected in: ``slate_rl/TopicRec-v0`` with the
    dataset's every environment parameter (``env_config``) and its item table (the file, resolved when it
    exists here, or the generation seed), so ``MinariDataset.recover_environment()`` builds that simulator.
    Its observations are the raw slate and clicks and its actions item ids: the dataset's belief
    observations and latent actions are the expert's encoder and the GeMS of ``gems_sha256`` over them."""
    import gymnasium as gym

    from slate_rl.sim import ENV_ID

    table = metadata["item_embeddings"]
    if "file" in table:
        path = Path(table["file"])
        source: dict[str, Any] = {"item_embeddings": str(path.resolve() if path.is_file() else path)}
    else:
        source = {"embeddings_seed": table["seed"]}
    return dataclasses.replace(gym.spec(ENV_ID), kwargs={"env": metadata["env_config"], **source},
                               max_episode_steps=int(metadata["episode_length"]))


def minari_reference_scores(metadata: dict[str, Any], references: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Minari's ``ref_min_score`` / ``ref_max_score``: the returns our normalised score puts at 0 and 100
    (``offline.evaluation.normalized_score``: uniform random latent actions and the expert's deterministic
    test return), from the ``references`` of a train-offline result on this dataset. Minari's
    ``get_normalized_score`` is then ours divided by 100."""
    try:
        low = float(references["random"]["return_mean"])
        high = float(references["expert_deterministic"]["return_mean"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"the references lack {exc}: give the environment's references file or the results "
                            "JSON of a train-offline run (both hold 'random' and 'expert_deterministic')") from None
    if not (np.isfinite(low) and np.isfinite(high)) or high == low:
        raise ArtifactError(f"reference returns random {low} and expert {high} define no score (they must be "
                            "finite and differ)")
    return {"ref_min_score": low, "ref_max_score": high}


def to_minari(dataset: OfflineDataset, root: str | os.PathLike[str], dataset_id: str | None = None,
              references: dict[str, dict[str, Any]] | None = None) -> str:
    """Write ``dataset`` as a Minari dataset under ``root``; return its id. Its environment spec is
    :func:`minari_env_spec`; with ``references`` (a train-offline result's) it also stores
    :func:`minari_reference_scores`."""
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    meta = dataset.metadata
    for field in ("env_config", "item_embeddings"):
        if not isinstance(meta.get(field), dict):
            raise ArtifactError(f"{dataset.path}: field {field!r} missing; the export's environment spec needs it "
                                "(rebuild the dataset with slate-rl collect)")
    scores = minari_reference_scores(meta, references) if references is not None else {}
    dataset_id = dataset_id or minari_id(meta["env"], meta["quality"])
    ep = dataset.episodes()
    k, s, n_items = ep["slates"].shape[-1], ep["observations"].shape[-1], int(meta["num_items"])
    center = np.asarray(meta["action_center"], dtype=np.float32)
    scale = np.asarray(meta["action_scale"], dtype=np.float32)
    obs_space = gym.spaces.Dict({
        "belief": gym.spaces.Box(-np.inf, np.inf, (s,), np.float32),
        "slate": gym.spaces.Box(0, n_items - 1, (k,), np.int64),
        "clicks": gym.spaces.MultiBinary(k),
    })
    action_space = gym.spaces.Box(center - scale, center + scale, dtype=np.float32)
    h = dataset.horizon
    truncations = np.zeros(h, dtype=bool)
    truncations[-1] = True
    buffers = [
        EpisodeBuffer(
            id=i, observations={"belief": ep["observations"][i], "slate": ep["slates"][i].astype(np.int64),
                                "clicks": ep["clicks"][i].astype(np.int8)},
            actions=ep["actions"][i], rewards=ep["rewards"][i].astype(np.float64),
            terminations=np.zeros(h, dtype=bool), truncations=truncations, infos={},
        )
        for i in range(dataset.num_episodes)
    ]
    description = (f"slate_rl {meta['quality']} dataset of {meta['env']} (TopicRec, GeMS latent actions); "
                   f"GeMS sha256 {meta['gems_sha256']}, behaviour return {meta['behaviour_return']['mean']:.2f}")
    spec = minari_env_spec(meta)
    with _minari_root(root), warnings.catch_warnings():
        # the environment spec serves evaluation too (Minari says so in a warning)
        warnings.filterwarnings("ignore", message="`eval_env` is set to None")
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id, buffer=buffers, env=spec, algorithm_name=str(meta["behaviour"].get("agent")),
            author="slate_rl", action_space=action_space, observation_space=obs_space, description=description,
            data_format="hdf5", **scores,
        )
    return dataset_id


def from_minari(dataset_id: str, root: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The D4RL arrays of a Minari dataset written by :func:`to_minari`."""
    import minari

    with _minari_root(root):
        md = minari.load_dataset(dataset_id)
        episodes = list(md.iterate_episodes())
    obs = [e.observations for e in episodes]
    return build_arrays(
        np.stack([o["slate"] for o in obs]), np.stack([o["clicks"] for o in obs]).astype(bool),
        np.stack([e.actions for e in episodes]), np.stack([e.rewards for e in episodes]),
        np.stack([o["belief"] for o in obs]),
    )


def to_d3rlpy(dataset: OfflineDataset) -> Any:
    """A d3rlpy ``MDPDataset`` (belief observations, latent actions); needs the ``d3rlpy`` extra."""
    try:
        from d3rlpy.dataset import MDPDataset
    except ImportError as exc:
        raise ConfigError("d3rlpy is not installed; `pip install 'slate_rl[d3rlpy]'` (an optional extra: it pins "
                          "gymnasium==1.0.0, so use a separate environment)") from exc
    a = dataset.arrays
    return MDPDataset(observations=a["observations"], actions=a["actions"], rewards=a["rewards"],
                      terminals=a["terminals"].astype(np.float32), timeouts=a["timeouts"].astype(np.float32))
