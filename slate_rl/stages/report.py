"""Stage ``report``: tables, statistics and figures of the results, in one Markdown report.

Reads the result files named by ``--inputs`` (the report rule passes its declared inputs: the
results of the current configuration, never stale files of earlier ones), or, without
``--inputs``, every ``<results-dir>/{env}/reference/*.json``, ``{env}/online/{agent}/seed*.json``,
``{env}/{quality}/{algo}/seed*.json`` and ``{env}/{algo}.json`` found; files that cannot be read are
skipped with a warning (and listed in the report). Writes ``--output`` (Markdown) and, in
``--figures-dir``: ``{env}.csv`` (the table of the env), ``{env}_curves.png`` (learning curves),
``{env}_returns.png`` (test returns with 95% CIs) for every env with results, and
``summary.csv`` (all envs; header only when there are no results), and, when the offline algorithms
share a dataset, ``aggregate.csv`` and ``aggregate_profile.png`` (normalised scores over every dataset
and environment: IQM, probability of improvement, performance profiles). Works with whatever
exists: missing results are named in the report, not an error.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from slate_rl.core.io import atomic_path
from slate_rl.report.markdown import render_report
from slate_rl.report.plots import plot_curves, plot_diagnostics, plot_profiles, plot_returns
from slate_rl.report.results import collect_results
from slate_rl.report.tables import (
    aggregate_offline,
    build_env_report,
    dataset_table,
    diagnostic_qualities,
    summary_table,
)

NAME = "report"
HELP = ("summarise every result (tables over seeds: mean, IQM, probability of improvement, paired tests; learning "
        "curves, bar charts, performance profiles) into results/report.md")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", default="results", help="directory of the result JSONs (default: results)")
    parser.add_argument("--inputs", nargs="*", default=None, metavar="JSON",
                        help="the result files to report, inside --results-dir (default: every JSON found there)")
    parser.add_argument("--output", default="results/report.md", help="Markdown report (default: results/report.md)")
    parser.add_argument("--figures-dir", default="results/report",
                        help="directory of the CSV tables and PNG figures (default: results/report)")
    parser.add_argument("--envs", default=None,
                        help="comma-separated environments to report, in this order (default: every one found)")


def run(args: argparse.Namespace) -> None:
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    results = collect_results(args.results_dir, args.inputs)
    envs = [e.strip() for e in args.envs.split(",") if e.strip()] if args.envs else results.envs()
    reports = [build_env_report(results, env) for env in envs]
    figures = Path(args.figures_dir)
    figures.mkdir(parents=True, exist_ok=True)
    for report in reports:
        if not len(report.table):
            continue
        with atomic_path(figures / f"{report.env}.csv") as tmp:
            report.table.to_csv(tmp, index=False)
        datasets = dataset_table(report)
        if len(datasets):
            with atomic_path(figures / f"{report.env}_datasets.csv") as tmp:
                datasets.to_csv(tmp, index=False)
        with atomic_path(figures / f"{report.env}_curves.png") as tmp:
            plot_curves(report, tmp)
        with atomic_path(figures / f"{report.env}_returns.png") as tmp:
            plot_returns(report, tmp)
        for quality in diagnostic_qualities(report):
            with atomic_path(figures / f"{report.env}_{quality}_diagnostics.png") as tmp:
                plot_diagnostics(report, quality, tmp)
    with atomic_path(figures / "summary.csv") as tmp:
        summary_table(reports).to_csv(tmp, index=False)
    aggregate = aggregate_offline(reports)
    if aggregate.tasks:
        with atomic_path(figures / "aggregate.csv") as tmp:
            aggregate.table.to_csv(tmp, index=False)
        with atomic_path(figures / "aggregate_profile.png") as tmp:
            plot_profiles(aggregate, tmp)
    output = Path(args.output)
    link = Path(os.path.relpath(figures.resolve(), output.resolve().parent)).as_posix()
    with atomic_path(output) as tmp:
        tmp.write_text(render_report(reports, results, args.results_dir, link, aggregate))
    found = sum(1 for r in reports if len(r.table))
    print(f"wrote {output} ({found} of {len(reports)} environments with results, {results.files_read} files read, "
          f"{len(results.skipped)} skipped) and {figures}/")
