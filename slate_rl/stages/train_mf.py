"""Stage ``train-mf``: BPR matrix factorisation item embeddings ``data/mf/{env}.npy`` (+ metrics JSON)."""

from __future__ import annotations

import argparse
import time

import numpy as np

from slate_rl.core.checks import require_finite
from slate_rl.core.config import add_arguments as add_config_arguments
from slate_rl.core.config import from_namespace, to_dict
from slate_rl.core.device import resolve_device
from slate_rl.core.io import fingerprint, save_npy, write_json, write_timings
from slate_rl.data.batches import TensorBatches
from slate_rl.data.logs import load_logs
from slate_rl.models.config import MFConfig
from slate_rl.models.mf import MFSystem, bpr_loss, interactions
from slate_rl.models.training import evaluate_batches, fit, remove_work_dir, seed_all
from slate_rl.stages.common import add_training_arguments, input_hashes

NAME = "train-mf"
HELP = "train BPR-MF item embeddings on logged sessions (data/mf/{env}.npy)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--logs", required=True, help="logged sessions, e.g. data/logs/focused_topdown.npz")
    add_config_arguments(parser, MFConfig)
    add_training_arguments(parser)
    parser.add_argument("--output", required=True, help="destination .npy (num_items x dim float32)")
    parser.add_argument("--metrics", required=True, help="destination metrics .json")


def run(args: argparse.Namespace) -> None:
    cfg = from_namespace(MFConfig, args)
    device = resolve_device(args.device)
    logs = load_logs(args.logs)
    num_items = int(logs.metadata["env_config"]["num_items"])
    train, val = interactions(logs, cfg.val_fraction, cfg.seed, cfg.variant)
    inputs = input_hashes(logs=args.logs)
    seed_all(cfg.seed)  # the initial embeddings are drawn here
    system = MFSystem(logs.num_sessions, num_items, cfg.dim, cfg.lr, cfg.weight_decay)
    train_batches = TensorBatches(train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_batches = TensorBatches(val, 8192, shuffle=False)
    start = time.perf_counter()
    summary = fit(
        system, train_batches, val_batches, work_dir=args.output + ".work", device=device, max_epochs=cfg.max_epochs,
        patience=cfg.patience, run_name=f"mf-{logs.metadata.get('env', 'env')}", run_config=to_dict(cfg),
        logger_mode=args.logger_mode, progress=not args.no_progress, seed=cfg.seed,
        fingerprint=fingerprint({"config": to_dict(cfg), "inputs": inputs}),
    )
    elapsed = time.perf_counter() - start
    system.to(device).eval()
    val_metrics = evaluate_batches(lambda b: bpr_loss(system.model, b["users"], b["pos"], b["neg"])[1],
                                   val_batches, device)
    table = system.model.items.weight.detach().cpu().numpy().astype(np.float32)
    require_finite(args.output, "MF item table", table)
    save_npy(args.output, table)
    write_json(args.metrics, {
        "env": logs.metadata.get("env"),
        "config": to_dict(cfg),
        "val_loss": val_metrics["loss"],
        "val_auc": val_metrics["auc"],
        "train_pairs": int(train["pos"].shape[0]),
        "val_pairs": int(val["pos"].shape[0]),
        **summary,
        "device": str(device),
        "inputs": inputs,
    })
    write_timings(args.metrics, train_seconds=elapsed, device=str(device))
    remove_work_dir(args.output + ".work")
    print(f"wrote {args.output}: val AUC {val_metrics['auc']:.3f}, val loss {val_metrics['loss']:.4f}, "
          f"{int(summary['epochs'])} epochs in {elapsed:.0f} s on {device}")
