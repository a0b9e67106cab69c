"""Offline datasets in the D4RL layout (``data/offline/{env}/{quality}.npz`` + ``.json``).

One transition per (episode, t), episodes contiguous, ``N = E * H``:

======================  ==============  ==================================================
``observations``        (N, S) float32  belief state before acting at t (the state encoder)
``actions``             (N, A) float32  latent action of the behaviour policy at t
``rewards``             (N,) float32    clicks at t
``next_observations``   (N, S) float32  belief state after step t
``terminals``           (N,) bool       all False (sessions end by time limit)
``timeouts``            (N,) bool       True at t = H - 1
``slates``              (N, k) int16    slate shown at t
``clicks``              (N, k) bool     clicks at t
``reset_slates``        (E, k) int16    the reset observation of each episode
``reset_clicks``        (E, k) bool
``episode_ids``         (N,) int32      episode index 0..E-1
``timesteps``           (N,) int16      t = 0..H-1
======================  ==============  ==================================================

The JSON beside it (:data:`REQUIRED_METADATA`) names the environment, the behaviour policy, the
GeMS checkpoint (hash) whose latent space the actions live in, the action bounds, the state
encoder, the behaviour return and the format version. :func:`load_dataset` is the one entry point
every consumer uses: it checks keys, shapes, dtypes, alignment and metadata, and names the file
and the field of every failure. :meth:`OfflineDataset.episodes` gives whole episodes
``(E, H[+1], ...)`` and :meth:`OfflineDataset.to_buffer` the replay buffer, so sequence models
sample whole sessions as easily as TD methods sample transitions.

The arrays are written uncompressed (``np.savez``): float data barely compresses and the write
of a 1M-transition dataset stays at a couple of seconds.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from slate_rl.core.checks import metadata_object
from slate_rl.core.errors import ArtifactError
from slate_rl.core.io import save_npz, write_json
from slate_rl.data.buffer import EpisodeBuffer

FORMAT = "slate_rl.d4rl"
VERSION = 1

# key -> (dtype, per-row trailing shape name) ; rows are N for transitions, E for reset arrays
ARRAYS: dict[str, tuple[np.dtype[Any], tuple[str, ...]]] = {
    "observations": (np.dtype(np.float32), ("N", "S")),
    "actions": (np.dtype(np.float32), ("N", "A")),
    "rewards": (np.dtype(np.float32), ("N",)),
    "next_observations": (np.dtype(np.float32), ("N", "S")),
    "terminals": (np.dtype(np.bool_), ("N",)),
    "timeouts": (np.dtype(np.bool_), ("N",)),
    "slates": (np.dtype(np.int16), ("N", "k")),
    "clicks": (np.dtype(np.bool_), ("N", "k")),
    "reset_slates": (np.dtype(np.int16), ("E", "k")),
    "reset_clicks": (np.dtype(np.bool_), ("E", "k")),
    "episode_ids": (np.dtype(np.int32), ("N",)),
    "timesteps": (np.dtype(np.int16), ("N",)),
}
REQUIRED_METADATA = ("format", "version", "env", "quality", "episodes", "episode_length", "slate_size",
                     "num_items", "obs_dim", "action_dim", "action_center", "action_scale", "gems_sha256",
                     "behaviour", "behaviour_return", "state_encoder", "seed")


def metadata_path(path: str | os.PathLike[str]) -> Path:
    """The JSON beside a dataset: ``expert.npz`` -> ``expert.json``."""
    return Path(path).with_suffix(".json")


def build_arrays(slates: np.ndarray, clicks: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                 beliefs: np.ndarray) -> dict[str, np.ndarray]:
    """Flatten episodes into the D4RL layout.

    ``slates``/``clicks`` (E, H+1, k) with the reset observation at index 0 (the replay-buffer
    layout), ``actions`` (E, H, A), ``rewards`` (E, H), ``beliefs`` (E, H+1, S) where
    ``beliefs[:, t]`` is the state after observing index t (so the state before acting at t).
    """
    e, h1, k = slates.shape
    h = h1 - 1
    n = e * h
    timesteps = np.tile(np.arange(h, dtype=np.int16), e)
    return {
        "observations": np.ascontiguousarray(beliefs[:, :-1].reshape(n, -1), dtype=np.float32),
        "actions": np.ascontiguousarray(actions.reshape(n, -1), dtype=np.float32),
        "rewards": np.ascontiguousarray(rewards.reshape(n), dtype=np.float32),
        "next_observations": np.ascontiguousarray(beliefs[:, 1:].reshape(n, -1), dtype=np.float32),
        "terminals": np.zeros(n, dtype=np.bool_),
        "timeouts": timesteps == h - 1,
        "slates": slates[:, 1:].reshape(n, k).astype(np.int16),
        "clicks": clicks[:, 1:].reshape(n, k).astype(np.bool_),
        "reset_slates": slates[:, 0].astype(np.int16),
        "reset_clicks": clicks[:, 0].astype(np.bool_),
        "episode_ids": np.repeat(np.arange(e, dtype=np.int32), h),
        "timesteps": timesteps,
    }


def save_dataset(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> None:
    """Validate, then write the arrays and the metadata JSON atomically (JSON last)."""
    meta = {"format": FORMAT, "version": VERSION, **metadata}
    validate_arrays(arrays, meta, Path(path))
    # An overwrite removes the old metadata first: a failure in between leaves a dataset without
    # metadata (rejected on load), never new arrays beside stale metadata.
    metadata_path(path).unlink(missing_ok=True)
    save_npz(path, arrays, compress=False)
    write_json(metadata_path(path), meta)


@dataclass
class OfflineDataset:
    """A validated dataset: arrays (numpy, read-only views of the file) and metadata."""

    path: Path
    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any]

    @property
    def num_episodes(self) -> int:
        return int(self.metadata["episodes"])

    @property
    def horizon(self) -> int:
        return int(self.metadata["episode_length"])

    def __len__(self) -> int:
        return self.num_episodes * self.horizon

    def episodes(self) -> dict[str, np.ndarray]:
        """Whole episodes: slates/clicks (E, H+1, k) with the reset observation at 0, actions
        (E, H, A), rewards (E, H), observations (E, H+1, S) (the state after each observation)."""
        e, h, a = self.num_episodes, self.horizon, self.arrays
        slates = np.concatenate([a["reset_slates"][:, None], a["slates"].reshape(e, h, -1)], axis=1)
        clicks = np.concatenate([a["reset_clicks"][:, None], a["clicks"].reshape(e, h, -1)], axis=1)
        obs = a["observations"].reshape(e, h, -1)
        beliefs = np.concatenate([obs, a["next_observations"].reshape(e, h, -1)[:, -1:]], axis=1)
        return {"slates": slates, "clicks": clicks, "actions": a["actions"].reshape(e, h, -1),
                "rewards": a["rewards"].reshape(e, h), "observations": beliefs}

    def episode_returns(self) -> np.ndarray:
        return self.arrays["rewards"].reshape(self.num_episodes, self.horizon).sum(axis=1, dtype=np.float64)

    def to_buffer(self, device: torch.device | str = "cpu", actions: np.ndarray | None = None) -> EpisodeBuffer:
        """The dataset in the one replay buffer, with the per-step states as extras
        (``observations``, ``next_observations``); ``actions`` (N, A') replaces the stored actions
        (e.g. relabelled for another GeMS)."""
        ep = self.episodes()
        e, h = self.num_episodes, self.horizon
        act = ep["actions"] if actions is None else actions.reshape(e, h, -1)
        s = ep["observations"].shape[-1]
        buf = EpisodeBuffer(e, h, ep["slates"].shape[-1], act.shape[-1], device,
                            extras={"observations": (s,), "next_observations": (s,)})
        buf.add({"slates": torch.from_numpy(ep["slates"].astype(np.int64)),
                 "clicks": torch.from_numpy(ep["clicks"]),
                 "actions": torch.from_numpy(np.ascontiguousarray(act, dtype=np.float32)),
                 "rewards": torch.from_numpy(ep["rewards"]),
                 "observations": torch.from_numpy(ep["observations"][:, :-1]),
                 "next_observations": torch.from_numpy(ep["observations"][:, 1:])})
        return buf


def load_dataset(path: str | os.PathLike[str], expect_gems_sha256: str | None = None,
                 expect_env: str | None = None, expect_env_config: Mapping[str, Any] | None = None) -> OfflineDataset:
    """Load and validate a dataset; every failure is an :class:`ArtifactError` naming file and field.

    ``expect_env`` is the environment's name and ``expect_env_config`` its parameters (e.g.
    ``to_dict(sim.config)``): a user-defined environment redefined under the same name no longer
    matches the dataset collected in its earlier definition.
    """
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: no such dataset; build it with `snakemake {p}` or `slate-rl collect`")
    mp = metadata_path(p)
    if not mp.is_file():
        raise ArtifactError(f"{mp}: metadata file missing beside {p.name}; rebuild the dataset")
    try:
        raw = mp.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{mp}: unreadable ({exc}); rebuild the dataset") from exc
    meta = metadata_object(raw, mp, "metadata")
    try:
        npz = np.load(p, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ArtifactError(f"{p}: unreadable dataset (a single array, not an .npz archive); rebuild it")
        with npz:
            missing = [k for k in ARRAYS if k not in npz.files]
            if missing:
                raise ArtifactError(f"{p}: missing field {missing[0]!r}; rebuild the dataset")
            arrays = {k: npz[k] for k in ARRAYS}
    except ArtifactError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(f"{p}: unreadable dataset ({exc}); rebuild it") from exc
    validate_arrays(arrays, meta, p)
    if expect_gems_sha256 is not None and meta["gems_sha256"] != expect_gems_sha256:
        raise ArtifactError(
            f"{mp}: field 'gems_sha256' is {meta['gems_sha256']!r}, expected {expect_gems_sha256!r}: the actions "
            "live in another GeMS latent space; use that GeMS checkpoint or relabel the actions")
    if expect_env is not None and meta["env"] != expect_env:
        raise ArtifactError(f"{mp}: field 'env' is {meta['env']!r}, expected {expect_env!r}")
    if expect_env_config is not None:
        stored = meta.get("env_config")
        if not isinstance(stored, dict):
            raise ArtifactError(f"{mp}: field 'env_config' (the environment's parameters) is missing, so the dataset "
                                "cannot be checked against the environment; rebuild the dataset")
        for key, value in expect_env_config.items():
            if stored.get(key) != value:
                raise ArtifactError(
                    f"{mp}: field 'env_config.{key}' is {stored.get(key)!r}, but environment {meta['env']!r} now has "
                    f"{value!r}: the dataset was collected in another definition of the environment; rebuild it")
    return OfflineDataset(p, arrays, meta)


def validate_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], path: Path) -> None:
    """Check the arrays against the layout and the metadata (see the module doc)."""
    mp = metadata_path(path)

    def fail(field: str, problem: str, where: Path = path) -> NoReturn:
        raise ArtifactError(f"{where}: field {field!r} {problem}; rebuild the dataset")

    for key in REQUIRED_METADATA:
        if key not in meta:
            fail(key, "is missing from the metadata", mp)
    for field, keys in (("state_encoder", ("sha256",)), ("behaviour_return", ("mean", "ci95"))):
        if not isinstance(meta[field], dict) or any(k not in meta[field] for k in keys):
            fail(field, f"must be an object with the keys {', '.join(keys)}", mp)
    if meta["format"] != FORMAT:
        fail("format", f"is {meta['format']!r}, expected {FORMAT!r}", mp)
    if meta["version"] != VERSION:
        fail("version", f"is {meta['version']!r}; this slate_rl reads version {VERSION}", mp)
    sizes = {}
    for field in ("episodes", "slate_size", "obs_dim", "action_dim", "episode_length"):
        value = meta[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(field, f"is {value!r}, expected a positive integer", mp)
        sizes[field] = value
    dims = {"E": sizes["episodes"], "k": sizes["slate_size"], "S": sizes["obs_dim"], "A": sizes["action_dim"]}
    h = sizes["episode_length"]
    dims["N"] = dims["E"] * h
    for key, (dtype, shape_names) in ARRAYS.items():
        if key not in arrays:
            fail(key, "is missing")
        arr = arrays[key]
        if arr.dtype != dtype:
            fail(key, f"has dtype {arr.dtype}, expected {dtype}")
        shape = tuple(dims[n] for n in shape_names)
        if arr.shape != shape:
            fail(key, f"has shape {arr.shape}, expected {shape} (from the metadata)")
    for key in ("observations", "actions", "rewards", "next_observations"):
        if not np.isfinite(arrays[key]).all():
            fail(key, "contains NaN or infinite values")
    e, n = dims["E"], dims["N"]
    t = np.tile(np.arange(h), e)
    if not np.array_equal(arrays["timesteps"], t):
        fail("timesteps", "is not 0..H-1 per episode (episodes must be contiguous)")
    if not np.array_equal(arrays["episode_ids"], np.repeat(np.arange(e), h)):
        fail("episode_ids", "is not 0..E-1, each repeated H times")
    if not np.array_equal(arrays["timeouts"], t == h - 1):
        fail("timeouts", "must be True exactly at the last step of each episode")
    if arrays["terminals"].any():
        fail("terminals", "must be all False (sessions end by the time limit)")
    inner = t[:n] < h - 1
    if not np.array_equal(arrays["next_observations"][inner], arrays["observations"][1:][inner[:-1]]):
        fail("next_observations", "is not aligned: next_observations[t] must equal observations[t+1] inside an "
             "episode")
    if not np.array_equal(arrays["rewards"], arrays["clicks"].sum(axis=1, dtype=np.float32)):
        fail("rewards", "does not equal the number of clicks at each step")
    try:
        num_items = int(meta["num_items"])
    except (TypeError, ValueError):
        fail("num_items", "is not an integer", mp)
    for key in ("slates", "reset_slates"):
        s = arrays[key]
        if s.size and (s.min() < 0 or s.max() >= num_items):
            fail(key, f"holds item ids outside [0, {num_items})")
    try:
        center = np.asarray(meta["action_center"], dtype=np.float32)
        scale = np.asarray(meta["action_scale"], dtype=np.float32)
    except (TypeError, ValueError):
        fail("action_center", "and action_scale must be lists of numbers", mp)
    if center.shape != (dims["A"],) or scale.shape != (dims["A"],):
        fail("action_center", f"and action_scale must have {dims['A']} values", mp)
    tol = 1e-4 * np.maximum(np.abs(scale), 1.0)
    if n and (np.abs(arrays["actions"] - center) > scale + tol).any():
        fail("actions", "leaves the action bounds of the metadata (action_center +- action_scale)")
