"""The one experiment logger: SwanLab, offline by default.

SwanLab's default mode wants a login and a terminal; here the mode is always explicit:
``offline`` (the default: runs are written under ``swanlog/`` and can be uploaded later with
``swanlab sync``), ``disabled`` (tests), ``local``, or ``cloud`` (only when the user asks).
The environment variable ``SLATE_RL_LOGGER`` overrides the configured mode, so a test run or
CI can disable logging everywhere.

:class:`RunLogger` serves the RL loops; :func:`lightning_logger` gives Lightning a logger that
writes to the same place with the same naming.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from slate_rl.core.errors import ConfigError

LOGGER_MODES = ("offline", "disabled", "local", "cloud")
DEFAULT_LOG_DIR = "swanlog"
PROJECT = "slate_rl"


def resolve_logger_mode(mode: str | None = None) -> str:
    """The effective mode: ``$SLATE_RL_LOGGER`` if set, else ``mode``, else offline."""
    chosen = os.environ.get("SLATE_RL_LOGGER") or mode or "offline"
    if chosen not in LOGGER_MODES:
        raise ConfigError(f"logger mode {chosen!r} is not one of {', '.join(LOGGER_MODES)}")
    return chosen


def _swanlab_mode(mode: str) -> str:
    return "online" if mode == "cloud" else mode


class RunLogger:
    """Scalar metrics of one run (an RL training loop, a benchmark)."""

    def __init__(
        self, name: str, config: Mapping[str, Any] | None = None, mode: str | None = None,
        log_dir: str = DEFAULT_LOG_DIR, group: str | None = None,
    ) -> None:
        self.mode = resolve_logger_mode(mode)
        self._run: Any = None
        if self.mode != "disabled":
            import swanlab

            self._run = swanlab.init(
                project=PROJECT, name=name, group=group, config=dict(config or {}),
                mode=_swanlab_mode(self.mode), log_dir=log_dir, reinit=True,
            )

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._run is not None:
            self._run.log({k: float(v) for k, v in metrics.items()}, step=step)

    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


def lightning_logger(
    name: str, config: Mapping[str, Any] | None = None, mode: str | None = None, log_dir: str = DEFAULT_LOG_DIR
) -> Any:
    """A Lightning logger (SwanLab's) or ``False`` (Lightning's "no logger") when disabled."""
    resolved = resolve_logger_mode(mode)
    if resolved == "disabled":
        return False
    from swanlab.integration.pytorch_lightning import SwanLabLogger

    logger = SwanLabLogger(
        project=PROJECT, experiment_name=name, mode=_swanlab_mode(resolved), log_dir=log_dir, save_dir=log_dir
    )
    if config:
        logger.log_hyperparams(dict(config))
    return logger
