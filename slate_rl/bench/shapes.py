"""The synthetic problem every update benchmark times (``slate-rl bench offline``/``sequence``): observation and
latent-action sizes, batch size, discount and session length. A module of its own, importing nothing, so
that ``bench/corl_reference.py`` (loaded by path from :mod:`slate_rl.bench.offline`) reads the same sizes
without importing the module that loads it."""

from __future__ import annotations

OBS_DIM, ACTION_DIM, BATCH_SIZE, GAMMA = 20, 32, 256, 0.99
HORIZON = 100
