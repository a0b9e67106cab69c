"""Stage ``pretrain-gems``: the GeMS VAE and its action bounds, ``data/gems/{env}/{gems_tag}.ckpt``.

Trains on every (slate, clicks) of the logged sessions (validation: the first
``val_fraction`` of sessions), keeps the best-validation weights, computes the action bounds
from the first ``bounds_sessions`` sessions, and writes the checkpoint plus a metrics JSON.
A killed run started again resumes from ``<output>.work/last.ckpt``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from slate_rl.core.config import add_arguments as add_config_arguments
from slate_rl.core.config import from_namespace, to_dict
from slate_rl.core.device import resolve_device
from slate_rl.core.errors import ConfigError
from slate_rl.core.io import fingerprint, write_json, write_timings
from slate_rl.data.batches import TensorBatches
from slate_rl.data.logs import LoggedSessions, load_logs
from slate_rl.models.config import GeMSConfig
from slate_rl.models.gems import action_bounds, gems_loss
from slate_rl.models.gems_system import GeMSSystem
from slate_rl.models.rankers import GeMSRanker, save_gems_ranker
from slate_rl.models.training import evaluate_batches, fit, remove_work_dir, seed_all
from slate_rl.sim.embeddings import load_item_embeddings
from slate_rl.stages.common import add_training_arguments, input_hashes

NAME = "pretrain-gems"
HELP = "pre-train the GeMS slate VAE on logged sessions (data/gems/{env}/{gems_tag}.ckpt)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--logs", required=True, help="logged sessions, e.g. data/logs/focused_topdown.npz")
    parser.add_argument("--item-embeddings", default=None,
                        help="frozen item table for item_table=mf_fixed (data/mf/{env}.npy) or ideal "
                             "(data/embeddings/{kind}.npy)")
    add_config_arguments(parser, GeMSConfig)
    add_training_arguments(parser)
    parser.add_argument("--output", required=True, help="destination .ckpt")
    parser.add_argument("--metrics", required=True, help="destination metrics .json")


def examples(logs: LoggedSessions, sessions: slice) -> dict[str, torch.Tensor]:
    """Every (slate, clicks) of steps 1..H of the selected sessions, compact dtypes."""
    k = logs.slates.shape[2]
    return {
        "slates": torch.from_numpy(np.ascontiguousarray(logs.slates[sessions]).reshape(-1, k)),
        "clicks": torch.from_numpy(np.ascontiguousarray(logs.clicks[sessions]).reshape(-1, k)),
    }


def run(args: argparse.Namespace) -> None:
    cfg = from_namespace(GeMSConfig, args)
    device = resolve_device(args.device)
    logs = load_logs(args.logs)
    env_cfg = logs.metadata["env_config"]
    num_items, item_dim, k = env_cfg["num_items"], env_cfg["num_topics"] * env_cfg["topic_size"], env_cfg["slate_size"]
    table = None
    if cfg.item_table != "scratch":
        if not args.item_embeddings:
            raise ConfigError(f"gems.item_table={cfg.item_table} needs --item-embeddings (an MF or simulator table)")
        # MF tables may be negative; the simulator's ("ideal") are not
        table = torch.from_numpy(load_item_embeddings(args.item_embeddings, num_items, item_dim,
                                                      nonnegative=cfg.item_table == "ideal"))
    n_val = max(1, int(round(cfg.val_fraction * logs.num_sessions)))
    if n_val >= logs.num_sessions:
        raise ConfigError(f"{args.logs}: {logs.num_sessions} sessions leave none for training after validation")
    train = examples(logs, slice(n_val, None))
    val = examples(logs, slice(0, n_val))
    if device.type == "cuda":  # int16/bool data fits on the GPU: batches never cross the bus
        train = {key: t.to(device) for key, t in train.items()}
        val = {key: t.to(device) for key, t in val.items()}
    inputs = input_hashes(logs=args.logs, item_embeddings=args.item_embeddings)
    seed_all(cfg.seed)  # the initial weights are drawn here
    system = GeMSSystem(num_items, item_dim, k, cfg.latent_dim, cfg.beta, cfg.lambda_click, cfg.lr,
                        cfg.item_table, table, cfg.sample_scale)
    env_name = logs.metadata.get("env", "env")
    start = time.perf_counter()
    summary = fit(
        system, TensorBatches(train, cfg.batch_size, shuffle=cfg.shuffle, seed=cfg.seed),
        TensorBatches(val, 8192, shuffle=False),
        work_dir=args.output + ".work", device=device, max_epochs=cfg.epochs, run_name=f"gems-{env_name}-{cfg.tag}",
        run_config=to_dict(cfg), logger_mode=args.logger_mode, progress=not args.no_progress, seed=cfg.seed,
        fingerprint=fingerprint({"config": to_dict(cfg), "inputs": inputs}),
    )
    elapsed = time.perf_counter() - start
    model = system.model.to(device).eval()
    val_metrics = evaluate_batches(
        lambda b: gems_loss(model, b["slates"], b["clicks"], cfg.beta, cfg.lambda_click, sample=False)[1],
        TensorBatches(val, 8192, shuffle=False), device,
    )
    bounds_data = examples(logs, slice(0, min(cfg.bounds_sessions, logs.num_sessions)))
    center, scale = action_bounds(model, bounds_data["slates"], bounds_data["clicks"])
    meta = {
        "env": env_name, "env_config": env_cfg, "config": to_dict(cfg), "tag": cfg.tag,
        "inputs": inputs,
    }
    save_gems_ranker(args.output, GeMSRanker(model, center, scale, meta))
    n_train = int(train["slates"].shape[0])
    write_json(args.metrics, {
        **meta,
        "val_loss": val_metrics["loss"],
        "val_slot_accuracy": val_metrics["slot_accuracy"],
        "val_click_accuracy": val_metrics["click_accuracy"],
        "val_kl": val_metrics["kl"],
        "val_ce": val_metrics["ce"],
        "val_bce": val_metrics["bce"],
        "train_examples": n_train,
        "val_examples": int(val["slates"].shape[0]),
        **summary,
        "device": str(device),
        "action_center": center.cpu().tolist(),
        "action_scale": scale.cpu().tolist(),
    })
    write_timings(args.metrics, train_seconds=elapsed,
                  examples_per_second=n_train * summary["epochs"] / max(elapsed, 1e-9), device=str(device))
    remove_work_dir(args.output + ".work")
    print(f"wrote {args.output}: val slot accuracy {val_metrics['slot_accuracy']:.3f}, "
          f"val loss {val_metrics['loss']:.4f}, KL {val_metrics['kl']:.4f}, {elapsed:.0f} s on {device}")
