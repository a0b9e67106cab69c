"""The report stage: result trees (partial, full, broken, empty) -> Markdown, CSVs and PNGs."""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from slate_rl.cli import main
from slate_rl.core.stats import mean_ci
from slate_rl.report.markdown import fmt, fmt_p
from slate_rl.report.results import Results, SeedResult, collect_results
from slate_rl.report.statistics import compare_seeds
from slate_rl.report.tables import build_env_report, normalized_score

GEMS = "sac_gems_d32_beta1_lc0.5_scratch_s58407201"
PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def _write(root: Path, rel: str, obj: object) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _returns(seed: int, level: float, n: int = 50) -> list[float]:
    return np.random.default_rng(seed).normal(level, 8.0, size=n).round(1).tolist()


def write_reference(root: Path, env: str, policy: str, mean: float) -> None:
    _write(root, f"{env}/reference/{policy}.json", {
        "env": env, "policy": policy, "return_mean": mean, "return_std": 9.0, "return_ci95": 0.8,
        "n_sessions": 500, "seed": 58517,
    })


def write_online(root: Path, env: str, agent: str, seed: int, level: float) -> list[float]:
    returns = _returns(1000 * seed + int(level), level)
    stats_ = mean_ci(returns)
    curve = [[100 * (k + 1), level * (k + 1) / 5 + seed] for k in range(5)]
    _write(root, f"{env}/online/{agent}/seed{seed}.json", {
        "env": env, "agent": agent, "seed": seed, "return_mean": stats_["mean"], "return_std": stats_["std"],
        "return_ci95": stats_["ci"], "n_sessions": len(returns), "returns": returns, "learning_curve": curve,
        "best_step": 500, "train_seconds": 1.0,
    })
    return returns


REFS = {name: {"return_mean": mean, "return_ci95": 1.0}
        for name, mean in (("behaviour", 90.0), ("zero_action", 60.0), ("random", 30.0))}


def write_offline(root: Path, env: str, quality: str, algo: str, seed: int, level: float) -> dict[str, float]:
    returns = _returns(7 * seed + int(level), level)
    stats_ = mean_ci(returns)
    score = normalized_score(stats_["mean"], 30.0, 90.0)
    _write(root, f"{env}/{quality}/{algo}/seed{seed}.json", {
        "env": env, "quality": quality, "algo": algo, "seed": seed, "return_mean": stats_["mean"],
        "return_std": stats_["std"], "return_ci95": stats_["ci"], "n_sessions": len(returns), "returns": returns,
        "normalized_score": score, "references": REFS,
        "learning_curve": [[1000 * (k + 1), level - 5 + k] for k in range(4)],
    })
    return {"seed": seed, "return_mean": stats_["mean"], "normalized_score": score}


def write_aggregate(root: Path, env: str, algo: str, per_seed: list[dict[str, float]]) -> None:
    means = [p["return_mean"] for p in per_seed]
    _write(root, f"{env}/{algo}.json", {
        "env": env, "algo": algo, "quality": "expert", "seeds": [p["seed"] for p in per_seed], "per_seed": per_seed,
        "return_mean": float(np.mean(means)), "return_ci95": mean_ci(means)["ci"],
        "normalized_score": float(np.mean([p["normalized_score"] for p in per_seed])),
        "normalized_score_ci95": 1.0, "n_seeds": len(per_seed), "references": REFS,
    })


@pytest.fixture
def partial_tree(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for policy, mean in (("random", 33.6), ("oracle", 71.1), ("eps-greedy", 82.9)):
        write_reference(root, "focused_topdown", policy, mean)
    write_online(root, "focused_topdown", GEMS, 0, 89.0)
    return root


LEVELS = {GEMS: 100.0, "sac_topk_ideal": 95.0, "reinforce": 60.0}


@pytest.fixture
def full_tree(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for env, shift in (("focused_topdown", 0.0), ("diffuse_mix", 20.0)):
        for policy, mean in (("random", 33.0), ("oracle", 105.0), ("eps-greedy", 100.0)):
            write_reference(root, env, policy, mean + shift)
        for agent, level in LEVELS.items():
            for seed in range(3):
                write_online(root, env, agent, seed, level + shift)
        write_online(root, env, "slateq", 0, 40.0 + shift)  # one seed only
        td3bc = [write_offline(root, env, "expert", "td3bc", seed, 80.0 + shift) for seed in range(3)]
        write_aggregate(root, env, "td3bc", td3bc)
        for seed in range(3):
            write_offline(root, env, "medium", "iql", seed, 70.0 + shift)
    # An aggregate whose per-seed files are gone: its seeds still count (without sessions or curves).
    write_aggregate(root, "diffuse_mix", "cql", [{"seed": s, "return_mean": 50.0 + s, "normalized_score": 33.0 + s}
                                                 for s in range(3)])
    return root


def run_report(results: Path, out: Path, *extra: str) -> tuple[str, Path]:
    code = main(["report", "--results-dir", str(results), "--output", str(out / "report.md"),
                 "--figures-dir", str(out / "report"), *extra])
    assert code == 0
    return (out / "report.md").read_text(), out / "report"


def _row(markdown: str, label: str, env: str | None = None) -> list[str]:
    """The cells of the first row called ``label`` (in the section of ``env`` when given)."""
    if env is not None:
        markdown = markdown.split(f"\n## {env}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in markdown.splitlines() if line.startswith(f"| {label} |")]
    assert lines, f"no row {label!r} in\n{markdown}"
    return [cell.strip() for cell in lines[0].strip("|").split("|")]


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG_HEADER


def test_partial_results_give_a_report_that_names_what_is_missing(partial_tree, tmp_path):
    markdown, figures = run_report(partial_tree, tmp_path / "out")
    data = json.loads((partial_tree / f"focused_topdown/online/{GEMS}/seed0.json").read_text())
    assert _row(markdown, "**SAC+GeMS**") == [
        "**SAC+GeMS**", "online", fmt(data["return_mean"]), f"± {fmt(data['return_ci95'])}†",
        fmt(data["return_mean"], 1), "1", "best", "best", "—"]
    assert _row(markdown, "*Oracle*")[:4] == ["*Oracle*", "reference", "71.10", "± 0.80†"]
    assert "no offline-algorithm results yet" in markdown
    assert "**one seed per method**" in markdown and "## Overview" not in markdown
    table = pd.read_csv(figures / "focused_topdown.csv")
    assert list(table["method"]) == [GEMS, "oracle", "eps-greedy", "random"]
    assert table.loc[0, "ci_over"] == "sessions" and table.loc[0, "return_mean"] == pytest.approx(data["return_mean"])
    pd.testing.assert_frame_equal(pd.read_csv(figures / "summary.csv"), table)
    for name in ("focused_topdown_curves.png", "focused_topdown_returns.png"):
        _assert_png(figures / name)
    assert "](report/focused_topdown_curves.png)" in markdown


def test_full_results_tables_match_the_statistics_of_the_seeds(full_tree, tmp_path):
    markdown, figures = run_report(full_tree, tmp_path / "out")
    env = "diffuse_mix"
    table = pd.read_csv(figures / f"{env}.csv", keep_default_na=False, na_values=[""])
    results = collect_results(full_tree)

    def seed_means(method: str, quality: str | None = None) -> np.ndarray:
        return np.array([s.return_mean for s in sorted(results.seeds, key=lambda s: s.seed)
                         if s.env == env and s.method == method and s.quality == quality])

    best = seed_means(GEMS)
    topk = table.set_index("method").loc["sac_topk_ideal"]
    assert topk["return_mean"] == pytest.approx(seed_means("sac_topk_ideal").mean())
    assert topk["return_ci95"] == pytest.approx(mean_ci(seed_means("sac_topk_ideal"))["ci"])
    # The same seeds 0-2 against the best: paired by seed.
    expected_p = stats.ttest_rel(seed_means("sac_topk_ideal"), best).pvalue
    assert topk["p_value"] == pytest.approx(expected_p) and topk["p_over"] == "paired"
    wins = np.mean([[float(x > y) + 0.5 * float(x == y) for y in best] for x in seed_means("sac_topk_ideal")])
    assert topk["p_improve"] == pytest.approx(wins)
    assert topk["iqm"] == pytest.approx(stats.trim_mean(seed_means("sac_topk_ideal"), 0.25))
    row = _row(markdown, "SAC+TopK (ideal)", env)
    assert row[2:4] == [fmt(topk["return_mean"]), f"± {fmt(topk['return_ci95'])}"]
    assert row[5] == "3" and row[7] == f"{fmt_p(expected_p)} (paired)"
    # A single seed against the best: no p-value (its test sessions say nothing of the spread over seeds).
    slateq = table.set_index("method").loc["slateq"]
    assert math.isnan(slateq["p_value"]) and pd.isna(slateq["p_over"])
    assert _row(markdown, "SlateQ", env)[7] == "n/a (1 seed)"
    # Offline: normalised score over seeds; the aggregate-only algorithm (no sessions) is tested over seeds.
    td3bc = table[(table["method"] == "td3bc")].iloc[0]
    assert td3bc["quality"] == "expert" and td3bc["n_seeds"] == 3
    assert td3bc["normalized_score"] == pytest.approx(normalized_score(seed_means("td3bc", "expert").mean(), 30, 90))
    cql = table[table["method"] == "cql"].iloc[0]
    assert cql["return_mean"] == pytest.approx(51.0) and cql["normalized_score"] == pytest.approx(34.0)
    assert cql["p_over"] in ("paired", "welch") and math.isfinite(cql["p_value"])
    # Rows: methods best first, then simulator references, then the offline reference points.
    kinds = list(table["kind"])
    assert kinds.index("reference") == len(kinds) - kinds[::-1].count("reference")
    assert list(table["return_mean"][table["kind"] != "reference"]) == sorted(
        table["return_mean"][table["kind"] != "reference"], reverse=True)
    assert list(table["method"][table["kind"] == "reference"]) == [
        "oracle", "eps-greedy", "random", "behaviour", "behaviour", "zero_action", "random_action"]
    assert "**SAC+GeMS**" in markdown and "## Overview" in markdown and "TD3+BC" in markdown
    summary = pd.read_csv(figures / "summary.csv")
    assert sorted(summary["env"].unique()) == ["diffuse_mix", "focused_topdown"]
    assert len(summary) == len(table) + len(pd.read_csv(figures / "focused_topdown.csv"))
    for e in ("diffuse_mix", "focused_topdown"):
        _assert_png(figures / f"{e}_curves.png")
        _assert_png(figures / f"{e}_returns.png")


def test_report_is_deterministic_and_envs_option_selects_and_orders(full_tree, tmp_path):
    first, figures = run_report(full_tree, tmp_path / "a", "--envs", "focused_topdown,focused_mix")
    second, _ = run_report(full_tree, tmp_path / "b", "--envs", "focused_topdown,focused_mix")
    assert first == second
    assert first.index("## focused_topdown") < first.index("## focused_mix")
    assert "## diffuse_mix" not in first and "No results for this environment yet." in first
    assert (figures / "focused_topdown.csv").read_bytes() == (tmp_path / "b/report/focused_topdown.csv").read_bytes()
    assert not (figures / "focused_mix.csv").exists()


def test_malformed_files_are_skipped_with_a_warning_naming_them(partial_tree, tmp_path, caplog):
    broken = partial_tree / "focused_topdown/online/reinforce/seed0.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"env": "focused_topdown", "agent": ')
    wrong = _write(partial_tree, "focused_topdown/online/slateq/seed1.json",
                   {"env": "focused_topdown", "agent": "slateq", "seed": 1, "return_mean": "high"})
    with caplog.at_level(logging.WARNING):
        markdown, figures = run_report(partial_tree, tmp_path / "out")
    logged = caplog.text
    assert str(broken) in logged and "not readable JSON" in logged
    assert str(wrong) in logged and "'return_mean'" in logged
    assert "## Skipped files" in markdown and f"`{broken}`" in markdown
    assert "REINFORCE" not in markdown and "SlateQ" not in markdown and "**SAC+GeMS**" in markdown
    assert len(pd.read_csv(figures / "focused_topdown.csv")) == 4


def test_empty_results_give_a_short_report(tmp_path):
    (tmp_path / "results").mkdir()
    markdown, figures = run_report(tmp_path / "results", tmp_path / "out")
    assert "No results found" in markdown and len(markdown.splitlines()) < 10
    assert pd.read_csv(figures / "summary.csv").empty
    assert sorted(p.name for p in figures.iterdir()) == ["summary.csv"]
    missing, _ = run_report(tmp_path / "nowhere", tmp_path / "out2")
    assert "No results found" in missing


def test_seed_comparisons_are_paired_on_shared_seeds_and_absent_with_one_seed():
    a, b = {0: 1.0, 1: 2.0, 2: 4.0, 3: 3.5}, {0: 2.0, 1: 5.0, 2: 6.5}
    p, test = compare_seeds(a, b)
    assert test == "welch" and p == pytest.approx(stats.ttest_ind(list(a.values()), list(b.values()),
                                                                   equal_var=False).pvalue)
    c = {0: 1.5, 1: 2.5, 2: 3.0, 3: 5.0}
    p, test = compare_seeds(a, c)
    # hand-computed: differences -0.5, -0.5, 1.0, -1.5: mean -0.375, sd 1.0308, t = -0.7276 on 3 df
    assert test == "paired" and p == pytest.approx(0.5194, abs=1e-3)
    assert compare_seeds({0: 1.0}, b)[1] == "" and math.isnan(compare_seeds({0: 1.0}, b)[0])
    assert normalized_score(60.0, 30.0, 90.0) == pytest.approx(50.0) and math.isnan(normalized_score(1, 5, 5))


def _seed(method: str, seed: int, mean: float) -> SeedResult:
    return SeedResult("e", "online", method, None, seed, mean, 1.0, 10, None, None, path=f"{method}/{seed}")


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(["reinforce", "slateq", "sac_wknn", "sac_kargmax", "sac_topk_mf"]),
                       st.lists(st.floats(0, 300, allow_nan=False), min_size=1, max_size=4), min_size=1),
       st.randoms(use_true_random=False))
def test_table_order_and_intervals_do_not_depend_on_input_order(groups, rnd: random.Random):
    seeds = [_seed(m, i, v) for m, values in groups.items() for i, v in enumerate(values)]
    table = build_env_report(Results(seeds=seeds), "e").table
    shuffled = list(seeds)
    rnd.shuffle(shuffled)
    pd.testing.assert_frame_equal(build_env_report(Results(seeds=shuffled), "e").table, table)
    assert list(table["return_mean"]) == sorted(table["return_mean"], reverse=True)
    assert table["best"].sum() == 1 and bool(table["best"].iloc[0])
    multi = table[table["n_seeds"] >= 2]
    assert (multi["return_ci95"] >= 0).all() and (multi["ci_over"] == "seeds").all()
    for _, row in table.iterrows():
        values = groups[row["method"]]
        assert min(values) - 1e-9 <= row["return_mean"] <= max(values) + 1e-9
        p = row["p_value"]
        assert row["best"] or math.isnan(p) or 0.0 <= p <= 1.0


def test_stale_results_outside_the_declared_inputs_stay_out_of_the_report(full_tree, tmp_path):
    """Results of an earlier configuration (a 4th TD3+BC seed, a dropped algorithm) are still
    under results/; the rule passes only the current ones as --inputs."""
    inputs = [str(p) for p in sorted(full_tree.rglob("*.json"))]
    write_offline(full_tree, "diffuse_mix", "expert", "td3bc", 3, 10.0)
    write_offline(full_tree, "diffuse_mix", "expert", "bc", 0, 55.0)
    write_aggregate(full_tree, "diffuse_mix", "bc", [{"seed": 0, "return_mean": 55.0, "normalized_score": 40.0}])
    markdown, figures = run_report(full_tree, tmp_path / "out", "--inputs", *inputs)
    table = pd.read_csv(figures / "diffuse_mix.csv", keep_default_na=False, na_values=[""])
    td3bc = table[table["method"] == "td3bc"].iloc[0]
    assert td3bc["n_seeds"] == 3 and "bc" not in set(table["method"])
    assert f"{len(inputs)} result files read" in markdown
    everything, _ = run_report(full_tree, tmp_path / "all")  # by hand, without --inputs: whatever exists
    assert f"{len(inputs) + 3} result files read" in everything


def test_dataset_tables_compare_methods_on_the_same_data(tmp_path):
    """Per dataset: p against the best method on that dataset (not the env's best), return as a % of
    that dataset's behaviour; timings files are neither results nor read: the report prints no wall-clock
    figure (its outputs are the same bytes for the same results)."""
    root = tmp_path / "results"
    for seed in (0, 1):
        write_offline(root, "e", "expert", "td3bc", seed, 85.0)
        write_offline(root, "e", "expert", "dt", seed, 80.0)
        write_offline(root, "e", "medium", "td3bc", seed, 50.0)
        write_offline(root, "e", "medium", "dt", seed, 55.0)
    _write(root, "e/expert/dt/seed0.timings.json", {"train_seconds": 4.0})
    results = collect_results(root)
    assert not results.skipped and not any("timings" in p for p in results.ignored + [s.path for s in results.seeds])
    from slate_rl.report.tables import dataset_table
    table = dataset_table(build_env_report(results, "e"))
    medium = table[table["quality"] == "medium"].set_index("method")
    assert bool(medium.loc["dt", "best"])  # DT wins on medium although TD3+BC is the env's best
    td3bc_medium = [s for s in results.seeds if s.method == "td3bc" and s.quality == "medium"]
    dt_medium = [s for s in results.seeds if s.method == "dt" and s.quality == "medium"]
    expected_p = stats.ttest_rel([s.return_mean for s in td3bc_medium], [s.return_mean for s in dt_medium]).pvalue
    assert medium.loc["td3bc", "p_value"] == pytest.approx(expected_p)
    assert medium.loc["td3bc", "pct_behaviour"] == pytest.approx(100 * medium.loc["td3bc", "return_mean"] / 90.0)
    assert "train_seconds" not in table.columns
    refs = table[(table["quality"] == "expert") & (table["kind"] == "reference")]
    assert list(refs["method"]) == ["behaviour", "zero_action", "random_action"]
    markdown, _ = run_report(root, tmp_path / "out")
    assert "### e: medium data" in markdown and "% of behaviour" in markdown and "Train (s)" not in markdown
    figures = sorted((tmp_path / "out" / "report").glob("*.csv"))
    before = [f.read_bytes() for f in figures]
    _write(root, "e/expert/dt/seed0.timings.json", {"train_seconds": 400.0})  # another run's wall clock
    assert run_report(root, tmp_path / "out")[0] == markdown and [f.read_bytes() for f in figures] == before


@pytest.mark.parametrize(("p", "text"), [(0.5, "0.500"), (0.001, "0.001"), (2.5e-7, "2.5e-07"), (0.0, "< 1e-300"),
                                         (float("nan"), "n/a")])
def test_p_values_are_formatted_without_claiming_zero(p, text):
    assert fmt_p(p) == text


def test_offline_diagnostics_get_a_figure_per_dataset_and_older_results_none(tmp_path):
    """Offline results with diagnostics (one of them with nulls, as BC's critic figures) give the figure of their
    dataset, referenced from the report; a dataset whose results have none (older files) gets no figure."""
    root = tmp_path / "results"
    write_reference(root, "focused_topdown", "random", 30.0)
    for seed in range(2):
        write_offline(root, "focused_topdown", "medium", "iql", seed, 70.0)  # no diagnostics
        for algo, q in (("td3bc", 5.0), ("bc", None)):
            write_offline(root, "focused_topdown", "expert", algo, seed, 80.0)
            path = root / f"focused_topdown/expert/{algo}/seed{seed}.json"
            data = json.loads(path.read_text())
            data["diagnostics"] = [[1000 * (k + 1), {
                "q_mean": None if q is None else q + k, "mc_return_mean": None if q is None else 4.0,
                "overestimation": None if q is None else q + k - 4.0, "action_distance": 1.0 - 0.1 * k + 0.05 * seed,
                "behaviour_noise": 0.1, "noise_distance": 0.28, "slate_match": 0.1 * k, "slot_match": 0.5}]
                for k in range(4)]
            path.write_text(json.dumps(data))
    results = collect_results(root)
    report = build_env_report(results, "focused_topdown")
    td3bc = next(m for m in report.methods if m.method == "td3bc")
    bc = next(m for m in report.methods if m.method == "bc")
    assert [c[:, 1].tolist() for c in td3bc.diagnostic_curves("overestimation")] == [[1.0, 2.0, 3.0, 4.0]] * 2
    assert bc.diagnostic_curves("overestimation") == [] and len(bc.diagnostic_curves("action_distance")) == 2
    markdown, figures = run_report(root, tmp_path / "out")
    _assert_png(figures / "focused_topdown_expert_diagnostics.png")
    assert not (figures / "focused_topdown_medium_diagnostics.png").exists()
    assert "(report/focused_topdown_expert_diagnostics.png)" in markdown
    assert "medium_diagnostics" not in markdown and not results.skipped
