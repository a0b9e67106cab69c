"""Measured effect of each published-vs-corrected switch on SAC+GeMS (docs/deviations.md).

Trains SAC+GeMS once per setting with the same seed, the same GeMS checkpoint and the same
fixed test users, on a reduced schedule, and prints one markdown row per setting: test return
+- 95% CI, best validation return, wall time. Run it on the artifacts of the quick preset::

    snakemake --cores 2 data/gems/focused_topdown/d32_beta1_lc0.5_scratch_s58407201.ckpt \
        --configfile workflow/presets/quick.yaml
    python bench/deviation_effects.py --root . --steps 400

Settings (each differs from the published defaults in one switch):

* ``published``: the defaults;
* ``logprob_scale_term``: SAC's log pi minus sum log(action_scale);
* ``warmup_20_full_box``: the earlier warm-up (2,000 environment steps = 20 sessions, whole box);
* ``gems_std``: a GeMS trained with the standard reparameterisation (trained here, same seed);
* any ``--variant NAME='--flag=value ...'`` given on the command line (e.g. a belief-table switch).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

GEMS_TAG = "d32_beta1_lc0.5_scratch_s58407201"


def _run(cmd: list[str], log: Path) -> None:
    with log.open("w") as out:
        subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=".", help="project directory holding data/ of the quick preset")
    p.add_argument("--env", default="focused_topdown")
    p.add_argument("--steps", type=int, default=400, help="training steps of 10 sessions + 10 updates")
    p.add_argument("--warmup-sessions", type=int, default=200, help="published warm-up at this budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="deviation_effects", help="work directory (under --root)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS", help="extra setting")
    p.add_argument("--only", default=None, help="comma-separated settings to run")
    args = p.parse_args()
    root = Path(args.root).resolve()
    work = root / args.out
    work.mkdir(parents=True, exist_ok=True)
    kind = "diffuse" if args.env.startswith("diffuse") else "focused"
    table, logs = root / f"data/embeddings/{kind}.npy", root / f"data/logs/{args.env}.npz"
    gems = root / f"data/gems/{args.env}/{GEMS_TAG}.ckpt"
    gems_std = work / f"{GEMS_TAG}_std.ckpt"
    schedule = [f"--total-steps={args.steps}", "--sessions-per-step=10", "--updates-per-step=10",
                f"--val-interval={max(args.steps // 10, 1)}", f"--checkpoint-interval={args.steps}",
                f"--warmup-sessions={args.warmup_sessions}"]
    settings: dict[str, tuple[Path, list[str]]] = {
        "published": (gems, []),
        "logprob_scale_term": (gems, ["--logprob-scale-term"]),
        "warmup_20_full_box": (gems, ["--warmup-sessions=20", "--warmup-action-width=1.0"]),
        "gems_std": (gems_std, []),
    }
    for item in args.variant:
        name, _, extra = item.partition("=")
        settings[name] = (gems, shlex.split(extra))
    chosen = args.only.split(",") if args.only else list(settings)
    if "gems_std" in chosen and not gems_std.is_file():
        quick = ["--epochs=2", "--batch-size=256", "--lr=0.001", "--seed=58407201", "--sample-scale=std"]
        _run(["slate-rl", "pretrain-gems", "--logs", str(logs), "--item-table", "scratch", *quick,
              "--device", "cpu", "--logger-mode", "disabled", "--no-progress", "--output", str(gems_std),
              "--metrics", str(work / "gems_std.json")], work / "gems_std.log")
    print(f"| setting ({args.env}, {args.steps} steps x 10 sessions, seed {args.seed}) | test return | "
          "best validation | wall |")
    print("|---|---|---|---|")
    for name in chosen:
        ckpt, extra = settings[name]
        results = work / f"{name}.json"
        start = time.perf_counter()
        _run(["slate-rl", "train-agent", "--env", args.env, "--embeddings-file", str(table),
              "--agent", f"sac_gems_{GEMS_TAG}", "--gems", str(ckpt), "--seed", str(args.seed), *schedule, *extra,
              "--device", "cpu", "--logger-mode", "disabled", "--no-progress",
              "--output-dir", str(work / name), "--results", str(results)], work / f"{name}.log")
        r = json.loads(results.read_text())
        print(f"| {name} | {r['return_mean']:.1f} +- {r['return_ci95']:.1f} | {r['best_val_return']:.1f} | "
              f"{time.perf_counter() - start:.0f} s |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
