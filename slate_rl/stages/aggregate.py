"""Stage ``aggregate``: one offline algorithm over seeds, ``results/{env}/{algo}.json``.

Reads the per-seed results (``results/{env}/{quality}/{algo}/seed{s}.json``) of one environment,
algorithm and dataset quality, and writes the mean over seeds of each seed's test return with a
Student-t 95% CI over the seed means, the same for the normalised score, the per-seed figures,
the reference returns (averaged over seeds: they are measured on the same users by every seed),
the mean learning curve (per step, over the seeds that have it) and the hashes of every input.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from slate_rl.core.errors import ArtifactError
from slate_rl.core.io import file_sha256, write_json
from slate_rl.core.stats import curve_band, mean_ci

NAME = "aggregate"
HELP = "aggregate the per-seed results of an offline algorithm into results/{env}/{algo}.json"
REQUIRED = ("env", "algo", "quality", "seed", "return_mean", "normalized_score", "references", "n_sessions")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", nargs="+", required=True, help="per-seed result JSONs")
    parser.add_argument("--output", required=True, help="destination JSON")


def _read(path: str) -> dict[str, Any]:
    """One per-seed result, its fields' types checked (a damaged file is one error naming it and the field)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable result ({exc}); give the per-seed .json results, or rerun "
                            "their rule") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(data).__name__}; rerun its rule")
    for key in REQUIRED:
        if key not in data:
            raise ArtifactError(f"{path}: field {key!r} missing; rerun its rule")
    checks = {"seed": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "return_mean": _finite, "normalized_score": _finite, "references": lambda v: isinstance(v, dict),
              "n_sessions": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0}
    for key, ok in checks.items():
        if not ok(data[key]):
            raise ArtifactError(f"{path}: field {key!r} is {data[key]!r}, not what the stage writes; rerun its rule")
    for name, ref in data["references"].items():
        if ref is not None and not (isinstance(ref, dict) and _finite(ref.get("return_mean"))):
            raise ArtifactError(f"{path}: field 'references.{name}' is {ref!r}, expected an object with a finite "
                                "'return_mean'; rerun its rule")
    return data


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def run(args: argparse.Namespace) -> None:
    runs = [_read(p) for p in args.inputs]
    first = runs[0]
    seen: dict[int, str] = {}
    for path, r in zip(args.inputs, runs, strict=True):
        if r["seed"] in seen:
            raise ArtifactError(f"{path} and {seen[r['seed']]} both hold seed {r['seed']}: aggregate each seed "
                                "once")
        seen[r["seed"]] = path
    for path, r in zip(args.inputs, runs, strict=True):
        for key in ("env", "algo", "quality"):
            if r[key] != first[key]:
                raise ArtifactError(f"{path}: field {key!r} is {r[key]!r}, expected {first[key]!r} (from "
                                    f"{args.inputs[0]}): aggregate one env, algorithm and quality at a time")
    ret = mean_ci([r["return_mean"] for r in runs])
    score = mean_ci([r["normalized_score"] for r in runs])
    refs: dict[str, Any] = {}
    for name, ref in first["references"].items():
        values = [r["references"][name]["return_mean"] for r in runs if r["references"].get(name)]
        refs[name] = {**ref, "return_mean": float(np.mean(values))} if values else ref
    curves = [np.asarray(r.get("learning_curve") or [], dtype=np.float64).reshape(-1, 2) for r in runs]
    steps, mean_curve, _ = curve_band(curves)
    curve = np.column_stack([steps, mean_curve]).tolist()
    write_json(args.output, {
        "env": first["env"], "algo": first["algo"], "quality": first["quality"],
        "seeds": [r["seed"] for r in runs],
        "per_seed": [{"seed": r["seed"], "return_mean": r["return_mean"], "return_ci95": r.get("return_ci95"),
                      "normalized_score": r["normalized_score"]} for r in runs],
        "return_mean": ret["mean"], "return_ci95": ret["ci"], "return_std": ret["std"], "n_seeds": ret["n"],
        "n_sessions": int(sum(r["n_sessions"] for r in runs)),
        "normalized_score": score["mean"], "normalized_score_ci95": score["ci"],
        "ci_definition": "Student-t 95% half-width over the per-seed mean test returns (NaN with one seed)",
        "references": refs, "learning_curve": curve,
        "inputs": {p: file_sha256(p) for p in args.inputs},
        "config": {k: first.get(k) for k in ("offline", "algo_config", "state_encoder", "decoder")},
    })
    print(f"wrote {args.output}: {first['algo']} on {first['env']}/{first['quality']}, {ret['n']} seeds: "
          f"{ret['mean']:.2f} +- {ret['ci']:.2f}, normalised {score['mean']:.1f}")
