"""The synthetic problem every update benchmark times (``slate-rl bench offline``/``sequence``): observation and
latent-action sizes, batch size, discount and session length. A module of its own, importing nothing, so
that :mod:`slate_rl.bench.offline`, :mod:`slate_rl.bench.sequence` and the CORL-style reference that the
offline benchmark times against (:mod:`slate_rl.bench.corl_reference`) read the same sizes, the reference
without importing the module that imports it."""

from __future__ import annotations

OBS_DIM, ACTION_DIM, BATCH_SIZE, GAMMA = 20, 32, 256, 0.99
HORIZON = 100
