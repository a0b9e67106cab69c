"""The Markdown text of ``results/report.md``.

Every section says what is missing instead of failing, so the report reads well from the
first reference-policy result on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from slate_rl.report.results import REFERENCE_POLICIES, Results
from slate_rl.report.tables import Aggregate, EnvReport, dataset_table, diagnostic_qualities, method_rank

SESSIONS_MARK = "†"
_KIND_ORDER = {"online": 0, "offline": 1, "reference": 2}
_REFERENCE_ORDER = {name: i for i, name in enumerate((*REFERENCE_POLICIES, "behaviour", "zero_action",
                                                     "random_action"))}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A GitHub Markdown table; ``align`` has one character per column, ``l`` or ``r``."""
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals, ``—`` when missing."""
    if x is None or pd.isna(x) or not math.isfinite(x):
        return "—"
    return f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    """A p-value: three decimals, or two significant digits below 0.001 (``< 1e-300`` where it underflows)."""
    if pd.isna(p):
        return "n/a"
    if p < 1e-300:
        return "< 1e-300"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _ci_cell(ci: float, over: str) -> str:
    if pd.isna(ci):
        return "—"
    return f"± {fmt(ci)}" + (SESSIONS_MARK if over == "sessions" else "")


def _interval_cell(est: float, low: float, high: float, digits: int = 1) -> str:
    """``est [low, high]``; the estimate alone when the interval is undefined (one seed)."""
    if pd.isna(est):
        return "—"
    if pd.isna(low) or pd.isna(high):
        return fmt(est, digits)
    return f"{fmt(est, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def _mean_ci_cell(mean: float, ci: float, digits: int = 1) -> str:
    return fmt(mean, digits) + ("" if pd.isna(ci) or pd.isna(mean) else f" ± {fmt(ci, digits)}")


def _comparison_cells(row: pd.Series) -> list[str]:
    """P(> best) with its CI and the p-value with its test, for a method row that is not the best."""
    if row["best"]:
        return ["best", "best"]
    if not row["p_over"]:
        return ["n/a (1 seed)", "n/a (1 seed)"]
    test = "paired" if row["p_over"] == "paired" else "Welch"
    return [_interval_cell(row["p_improve"], row["p_improve_low"], row["p_improve_high"], 2),
            f"{fmt_p(row['p_value'])} ({test})"]


def _data_cell(row: pd.Series) -> str:
    if row["kind"] == "reference":
        return f"reference ({row['quality']} data)" if row["quality"] else "reference"
    return row["quality"] or row["kind"]


def _env_rows(table: pd.DataFrame) -> list[list[str]]:
    rows = []
    for _, row in table.iterrows():
        if row["kind"] == "reference":
            label, compared, iqm_cell = f"*{row['label']}*", ["—", "—"], "—"
        else:
            label = f"**{row['label']}**" if row["best"] else row["label"]
            compared = _comparison_cells(row)
            iqm_cell = _interval_cell(row["iqm"], row["iqm_low"], row["iqm_high"])
        rows.append([
            label, _data_cell(row), fmt(row["return_mean"]), _ci_cell(row["return_ci95"], row["ci_over"]), iqm_cell,
            str(row["n_seeds"]) if row["kind"] != "reference" else "—", *compared,
            _mean_ci_cell(row["normalized_score"], row["normalized_score_ci95"]),
        ])
    return rows


def _missing(report: EnvReport) -> list[str]:
    notes = []
    have = {r.name for r in report.references}
    absent = [p for p in REFERENCE_POLICIES if p not in have]
    if len(absent) == len(REFERENCE_POLICIES):
        notes.append("no reference-policy results (oracle, eps-greedy, random)")
    elif absent:
        notes.append(f"reference policies missing: {', '.join(absent)}")
    for kind, what in (("online", "online-agent"), ("offline", "offline-algorithm")):
        if not any(m.kind == kind for m in report.methods):
            notes.append(f"no {what} results yet")
    single = [report.method_label(m) for m in report.methods if m.n_seeds == 1]
    if single and len(single) == len(report.methods):
        notes.append("**one seed per method**: every CI (†) is over the test sessions of one run, which is "
                     "evaluation noise, not the spread over seeds that decides which method is better; no "
                     "IQM interval, probability-of-improvement interval or p-value is given")
    elif single:
        notes.append(f"one seed only (CI † over its test sessions; no p-value): {', '.join(single)}")
    no_sessions = [report.method_label(m) for m in report.methods if m.session_returns() is None]
    if no_sessions:
        notes.append(f"no per-session returns (from an aggregate file): {', '.join(no_sessions)}")
    if report.methods and not any(m.curves() for m in report.methods):
        notes.append("no learning curves")
    return notes


def _footnotes(report: EnvReport) -> str:
    best = report.best
    lines = [
        "Return: mean over seeds of each seed's mean test return (clicks per session). "
        "95% CI: Student-t half-width over the per-seed means; "
        f"{SESSIONS_MARK} marks a CI over the test sessions of a single run (one seed, or a reference policy).",
        "IQM: interquartile mean of the seeds' returns [stratified bootstrap 95% CI, 2,000 resamples].",
    ]
    if best is not None:
        lines.append(
            f"P(> best): probability that a seed of the method beats a seed of the best method, "
            f"**{report.method_label(best)}** ({fmt(best.return_mean)}) [bootstrap 95% CI]. "
            "p: two-sided t-test against it over the seeds, paired by seed when both ran the same seeds "
            "(every run is tested on the same users with the same evaluation seed), Welch's otherwise; "
            "none with one seed."
        )
    if any(m.kind == "offline" for m in report.methods):
        lines.append("Norm. score: 100 (R − R_random) / (R_expert − R_random), mean ± 95% CI over seeds.")
    return "\n".join(f"- {line}" for line in lines)


def _dataset_sections(report: EnvReport) -> list[str]:
    """The offline methods compared dataset by dataset (p against the best method on that dataset)."""
    table = dataset_table(report)
    parts = []
    for quality, block in table.groupby("quality", sort=False):
        rows = []
        for _, row in block.iterrows():
            method_row = row["kind"] != "reference"
            label = f"*{row['label']}*" if not method_row else f"**{row['label']}**" if row["best"] else row["label"]
            rows.append([label, fmt(row["return_mean"]), _ci_cell(row["return_ci95"], row["ci_over"]),
                         _interval_cell(row["iqm"], row["iqm_low"], row["iqm_high"]) if method_row else "—",
                         _mean_ci_cell(row["peak_val"], row["peak_val_ci95"]),
                         _mean_ci_cell(row["final_val"], row["final_val_ci95"]),
                         fmt(row["pct_behaviour"], 1), fmt(row["normalized_score"], 1),
                         *(_comparison_cells(row) if method_row else ["—", "—"]),
                         str(row["n_seeds"]) if method_row else "—"])
        headers = ["Method", "Return", "95% CI", "IQM", "Peak val", "Final val", "% of behaviour", "Norm. score",
                   "P(> best here)", "p vs best here", "Seeds"]
        parts.append(f"### {report.env}: {quality} data\n\n" + markdown_table(headers, rows, "lrrrrrrrrrr"))
    return parts


def _env_section(report: EnvReport, figures_link: str) -> str:
    parts = [f"## {report.env}"]
    if not len(report.table):
        parts.append("No results for this environment yet.")
        return "\n\n".join(parts)
    notes = _missing(report)
    if notes:
        parts.append("Not available yet / caveats:\n\n" + "\n".join(f"- {n}" for n in notes))
    headers = ["Method", "Data", "Return", "95% CI", "IQM", "Seeds", "P(> best)", "p vs best", "Norm. score"]
    parts.append(markdown_table(headers, _env_rows(report.table), "llrrrrrrr"))
    parts.append(_footnotes(report))
    datasets = _dataset_sections(report)
    if datasets:
        parts.append("Offline methods dataset by dataset (statistics against the best method on the same data; "
                     "Peak val / Final val: best / last validation return of each seed's learning curve, mean ± 95% "
                     "CI over seeds, so that a collapse in training shows as final << peak; "
                     "wall-clock times are in each result's .timings.json, not in the report):")
        parts.extend(datasets)
    for quality in diagnostic_qualities(report):
        parts.append(
            f"Diagnostics of the offline methods on {quality} data (at each validation: the critic's estimate minus "
            "the Monte-Carlo return on the played sessions; the distance of the policy's action from the dataset's, "
            "dotted: the collection noise's; the fraction of dataset states where the two decode to one slate):\n\n"
            f"![{report.env}, {quality}: diagnostics]({figures_link}/{report.env}_{quality}_diagnostics.png)")
    parts.append(
        f"![{report.env}: learning curves]({figures_link}/{report.env}_curves.png)\n\n"
        f"![{report.env}: test returns]({figures_link}/{report.env}_returns.png)\n\n"
        f"Table as CSV: [`{figures_link}/{report.env}.csv`]({figures_link}/{report.env}.csv)."
    )
    return "\n\n".join(parts)


def _overview(reports: Sequence[EnvReport]) -> str:
    """Return ± CI of every row (method or reference) in every environment: one row per method."""
    envs = [r.env for r in reports if len(r.table)]
    cells: dict[tuple[int, int, str, str, str], dict[str, str]] = {}
    for report in reports:
        for _, row in report.table.iterrows():
            if row["kind"] == "reference":
                order = _REFERENCE_ORDER.get(row["method"], len(_REFERENCE_ORDER))
            else:
                order = method_rank(row["kind"], row["method"])
            key = (_KIND_ORDER[row["kind"]], order, row["label"], row["quality"], _data_cell(row))
            mark = SESSIONS_MARK if row["ci_over"] == "sessions" else ""
            ci = "" if pd.isna(row["return_ci95"]) else f" ± {fmt(row['return_ci95'], 1)}{mark}"
            cells.setdefault(key, {})[report.env] = fmt(row["return_mean"], 1) + ci
    rows = []
    for key in sorted(cells):
        kind, _, label, _, data = key
        rows.append([f"*{label}*" if kind == 2 else label, data, *(cells[key].get(e, "—") for e in envs)])
    return "## Overview\n\nTest return ± 95% CI (see each environment's notes).\n\n" + markdown_table(
        ["Method", "Data", *envs], rows, "ll" + "r" * len(envs))


def _aggregate_section(aggregate: Aggregate, figures_link: str) -> str:
    """The offline algorithms over every task of the run: IQM of the normalised scores, probability of
    improvement over the best, and the performance profile."""
    tasks = ", ".join(f"{env}/{quality}" for env, quality in aggregate.tasks)
    rows = []
    for _, row in aggregate.table.iterrows():
        label = f"**{row['label']}**" if row["best"] else row["label"]
        prob = "best" if row["best"] else _interval_cell(row["p_improve"], row["p_improve_low"],
                                                         row["p_improve_high"], 2)
        rows.append([label, str(row["n_runs"]), fmt(row["mean_score"], 1),
                     _interval_cell(row["iqm"], row["iqm_low"], row["iqm_high"]), prob])
    single = all(s.size == 1 for strata in aggregate.scores.values() for s in strata)
    caveat = (" **One seed per task**: no bootstrap interval is given; rerun with more seeds "
              "(`offline.seeds`) for a comparison." if single else "")
    return (
        "## Aggregate: offline algorithms over every dataset\n\n"
        "Normalised scores (0 = random latent actions, 100 = the collecting expert agent's deterministic test "
        f"return) of the "
        f"{len(aggregate.tasks)} task{'s' * (len(aggregate.tasks) != 1)} that every offline algorithm ran "
        f"({tasks}). IQM: interquartile mean over all runs (seeds x tasks) [stratified bootstrap 95% CI: seeds "
        "resampled within each task]; P(> best): probability of improvement over the algorithm of the highest "
        f"IQM, averaged over tasks [stratified bootstrap 95% CI].{caveat}\n\n"
        + markdown_table(["Method", "Runs", "Mean score", "IQM", "P(> best)"], rows, "lrrrr")
        + f"\n\n![Performance profiles]({figures_link}/aggregate_profile.png)\n\n"
        f"Table as CSV: [`{figures_link}/aggregate.csv`]({figures_link}/aggregate.csv)."
    )


def render_report(reports: Sequence[EnvReport], results: Results, results_dir: str, figures_link: str,
                  aggregate: Aggregate | None = None) -> str:
    """The whole report; ``figures_link`` is the figures directory relative to the report file; ``aggregate``
    (the offline algorithms over every task) gets its section when it has a task."""
    parts = ["# Results report"]
    counts = f"{results.files_read} result file{'s' * (results.files_read != 1)} read from `{results_dir}`"
    if results.skipped:
        counts += f", {len(results.skipped)} skipped (listed at the end)"
    if results.ignored:
        counts += f", {len(results.ignored)} other JSON file{'s' * (len(results.ignored) != 1)} ignored"
    parts.append(f"Generated by `slate-rl report`: {counts}.")
    with_results = [r for r in reports if len(r.table)]
    if not with_results:
        parts.append(
            f"No results found in `{results_dir}` yet. Run the pipeline (`snakemake`, or one result, e.g. "
            "`snakemake results/focused_topdown/reference/oracle.json`) and then `slate-rl report` again."
        )
    else:
        parts.append("Environments: " + ", ".join(f"[{r.env}](#{r.env})" for r in reports) + ".")
        if len(with_results) > 1:
            parts.append(_overview(with_results))
        if aggregate is not None and aggregate.tasks:
            parts.append(_aggregate_section(aggregate, figures_link))
        parts.extend(_env_section(r, figures_link) for r in reports)
    if results.skipped:
        parts.append("## Skipped files\n\n" + "\n".join(f"- `{path}`: {why}" for path, why in results.skipped))
    return "\n\n".join(parts) + "\n"
