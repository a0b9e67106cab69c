"""The Snakemake workflow: dry runs, config validation, and the real pipeline on a tiny config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from slate_rl.core.errors import ConfigError
from slate_rl.data.d4rl import load_dataset
from slate_rl.data.logs import load_logs
from slate_rl.pipeline import validate_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny.yaml"


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 600,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("snakemake", path=os.path.dirname(sys.executable)) or "snakemake"
    env = {**(env or os.environ), "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(
        [exe, "--snakefile", str(REPO / "Snakefile"), "--directory", str(cwd), *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )


def tiny_with_plugins(tmp_path: Path, target: str, overlay: dict) -> subprocess.CompletedProcess[str]:
    """``target`` built from the tiny config plus ``overlay``, with ``tests/plugins`` on ``PYTHONPATH``."""
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests" / "plugins"),
                                                                      os.environ.get("PYTHONPATH")]))}
    return snakemake(target, "--cores", "2", "--configfile", str(TINY), str(path), cwd=tmp_path, env=env)


def _job_counts(output: str) -> dict[str, int]:
    counts = {}
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("job ") and "count" in line)
    for line in lines[start + 2 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_dry_run_of_config_yaml_lists_the_paper_scale_jobs(tmp_path):
    res = snakemake("-n", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    counts = _job_counts(res.stdout)
    assert counts == {
        "item_embeddings": 2, "logged_sessions": 6, "reference_policy": 18, "mf_embeddings": 6, "gems": 6,
        "online_agent": 420, "offline_references": 6, "offline_dataset": 24, "offline_mixture": 6,
        "offline_policy": 1200, "offline_aggregate": 48, "report": 1, "all": 1, "total": 1744,
    }


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (["--config", "foo=1"], "unknown key 'foo'"),
        (["--config", "device=gpu"], "key 'device'"),
        (["--config", "logs={'sessions': 'many', 'epsilon': 0.5, 'seed': 1, 'batch_size': 8}"], "key 'logs.sessions'"),
        (["--config", "logs={'sessions': 0, 'epsilon': 0.5, 'seed': 1, 'batch_size': 8}"], "key 'logs.sessions'"),
        (["--config", "envs=['nope']"], "unknown environment 'nope'"),
    ],
)
def test_invalid_config_stops_snakemake_with_one_message(tmp_path, override, expected):
    res = snakemake("-n", *override, cwd=tmp_path)
    assert res.returncode != 0
    assert expected in res.stderr + res.stdout
    assert "Traceback" not in res.stderr


def test_a_templated_config_file_is_refused(tmp_path):
    """A --configfile setting __use_yte__ is a YTE template: Snakemake runs its Python while loading it and
    then drops the key from ``config``, so validation alone would not see it; the workflow reads the file
    and stops with one message naming it and the key."""
    from snakemake.common.configfile import load_configfile

    templated = tmp_path / "templated.yaml"
    templated.write_text('__use_yte__: true\ndevice: ?"c" + "pu"\n')
    assert load_configfile(str(templated)) == {"device": "cpu"}  # the code ran and the key is gone
    res = snakemake("-n", "--configfile", str(templated), cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert f"config file {templated} sets '__use_yte__'" in res.stderr + res.stdout


@pytest.mark.e2e
@pytest.mark.usefixtures("single_thread")
def test_a_yaml_syntax_error_in_config_yaml_stops_snakemake_with_file_and_line(tmp_path):
    import shutil
    import subprocess
    import sys

    shutil.copy(REPO / "Snakefile", tmp_path / "Snakefile")
    shutil.copytree(REPO / "workflow", tmp_path / "workflow")
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text().replace("\nlogs:", "\nlogs: [", 1))
    exe = shutil.which("snakemake", path=os.path.dirname(sys.executable)) or "snakemake"
    res = subprocess.run([exe, "-n", "--snakefile", str(tmp_path / "Snakefile"), "--directory", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert f"{tmp_path / 'config.yaml'}, line" in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]


# A sitecustomize that makes every import of torch (and Lightning) fail, as on a login node without them.
BLOCK_TORCH = """
import sys


class _BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "lightning"):
            raise ImportError(f"{name} is blocked in this test")
        return None


sys.meta_path.insert(0, _BlockTorch())
"""


def _torchless_env(tmp_path: Path) -> dict[str, str]:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCK_TORCH)
    path = os.pathsep.join(p for p in (str(shim), str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


@pytest.mark.parametrize("configfile", [None, TINY, REPO / "workflow" / "presets" / "quick.yaml"],
                         ids=["config.yaml", "tiny", "quick"])
def test_dry_run_imports_no_torch(tmp_path, configfile):
    """Parsing the Snakefile (config validation, tags, paths) needs no torch: `snakemake -n` plans every job with
    torch unimportable."""
    env = _torchless_env(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr  # the shim is in force
    work = tmp_path / "work"
    work.mkdir()
    res = snakemake("-n", *(["--configfile", str(configfile)] if configfile else []), cwd=work, env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "online_agent" in res.stdout and "offline_policy" in res.stdout


def _config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_config_yaml_is_valid_and_every_field_of_the_schema_is_documented():
    validate_config(_config())


def test_user_defined_environment_is_accepted_and_checked():
    cfg = _config()
    cfg["environments"] = {"my_env": {"base": "focused_divpen", "diversity_penalty": 2.0}}
    cfg["envs"] = ["my_env"]
    validate_config(cfg)
    cfg["environments"]["my_env"]["diversity_penalty"] = "high"
    with pytest.raises(ConfigError, match="environments.my_env.diversity_penalty"):
        validate_config(cfg)
    cfg["environments"] = {"focused_mix": {"diversity_penalty": 2.0}}
    cfg["envs"] = ["focused_mix"]
    with pytest.raises(ConfigError, match="redefines a preset"):
        validate_config(cfg)


def test_schema_env_parameters_match_the_simulator_config():
    import dataclasses

    from slate_rl.pipeline import load_schema
    from slate_rl.sim.config import TopicRecConfig

    props = set(load_schema()["$defs"]["env_params"]["properties"])
    assert props == {f.name for f in dataclasses.fields(TopicRecConfig)} | {"base"}


@pytest.mark.e2e
def test_tiny_pipeline_end_to_end(tmp_path):
    # The card's command first (one offline result and its whole chain), then the default target.
    # (targets before --configfile, which takes several values)
    card = snakemake("results/diffuse_mix/td3bc.json", "--cores", "2", "--configfile", str(TINY), cwd=tmp_path)
    assert card.returncode == 0, card.stderr[-3000:]
    assert (tmp_path / "results/diffuse_mix/td3bc.json").is_file()
    assert not (tmp_path / "results/report.md").exists()
    res = snakemake("--cores", "2", "--configfile", str(TINY), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    logs = load_logs(tmp_path / "data/logs/diffuse_mix.npz")
    assert logs.slates.shape == (64, 100, 10) and logs.slates.dtype == np.int16
    assert logs.clicks.dtype == np.bool_ and logs.reset_slates.shape == (64, 10)
    assert np.array_equal(logs.returns, logs.clicks.sum(axis=(1, 2)).astype(np.float32))
    assert logs.metadata["env"] == "diffuse_mix" and logs.metadata["logs_config"]["sessions"] == 64
    table = np.load(tmp_path / "data/embeddings/diffuse.npy")
    assert table.shape == (1000, 20)
    results = {p: json.loads((tmp_path / f"results/diffuse_mix/reference/{p}.json").read_text())
               for p in ("random", "oracle", "eps-greedy")}
    for r in results.values():
        assert r["n_sessions"] == 32 and r["return_ci95"] > 0
    # Both the oracle and eps-greedy must beat random slates.
    random_return = results["random"]["return_mean"]
    assert random_return < min(results["eps-greedy"]["return_mean"], results["oracle"]["return_mean"])
    for rule_dir in ("logs/logs", "benchmarks/logs"):
        assert any((tmp_path / rule_dir).iterdir()), f"{rule_dir} is empty"
    # offline datasets (qualities and a mixture), offline policies, aggregates and the report
    for quality in ("expert", "random", "mix"):
        ds = load_dataset(tmp_path / f"data/offline/diffuse_mix/{quality}.npz", expect_env="diffuse_mix")
        assert len(ds) == 8 * 100 and ds.metadata["quality"] == quality
    assert (tmp_path / "data/agents/diffuse_mix/sac_gems_d8_beta1_lc0.5_scratch_s58407201/seed0/medium.ckpt"
            ).is_file()
    for algo in ("td3bc", "bc", "dt", "dd"):
        assert (tmp_path / f"data/policies/diffuse_mix/expert/{algo}/seed0.pt").is_file()
        agg = json.loads((tmp_path / f"results/diffuse_mix/{algo}.json").read_text())
        assert agg["seeds"] == [0] and agg["quality"] == "expert" and np.isfinite(agg["return_mean"])
        assert {"behaviour", "zero_action", "random"} <= set(agg["references"])
    report = (tmp_path / "results/report.md").read_text()
    assert "TD3+BC" in report and "SAC+GeMS" in report
    assert (tmp_path / "results/report/diffuse_mix_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = snakemake("-n", "--configfile", str(TINY), cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr

    changed = snakemake("-n", "--configfile", str(TINY), "--config", "evaluation={'test_sessions': 16, "
                        "'test_seed': 58517, 'reference_policies': ['random', 'oracle', 'eps-greedy'], 'epsilon': 0.5}",
                        cwd=tmp_path)
    counts = _job_counts(changed.stdout)
    assert counts.get("reference_policy") == 3 and "logged_sessions" not in counts, changed.stdout

    # another agent's settings: the SAC job's params are unchanged, so nothing reruns
    slateq = tmp_path / "slateq.yaml"
    slateq.write_text(yaml.safe_dump({"slateq": {"lr": 0.5}, "reinforce": {"lr": 0.5}}))
    other = snakemake("-n", "--configfile", str(TINY), str(slateq), cwd=tmp_path)
    assert other.returncode == 0 and "Nothing to be done" in other.stdout + other.stderr, other.stdout


def test_lint_is_clean_and_every_rule_declares_log_benchmark_threads_resources(tmp_path):
    res = snakemake("--lint", cwd=tmp_path)
    assert res.returncode == 0 and "Congratulations" in res.stdout + res.stderr, res.stdout + res.stderr
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in smk.read_text().split("\nrule ")[1:]:  # common.smk holds helpers only
            name = block.split(":", 1)[0]
            for directive in ("log:", "benchmark:", "threads:", "resources:", "conda:"):
                assert f"\n    {directive}" in block, f"rule {name} in {smk.name} lacks {directive}"
            if "slate-rl " in block:  # the job computes with the threads Snakemake gave it
                assert "--threads {threads}" in block, f"rule {name} in {smk.name} does not pass --threads {{threads}}"


@pytest.mark.slow
def test_card_command_with_the_quick_preset(tmp_path):
    """`snakemake --cores 2 results/diffuse_mix/td3bc.json --configfile workflow/presets/quick.yaml` from
    nothing (about 6 minutes on a 2-core CPU): TD3+BC on the expert data beats the random quality by far (the
    quick TD3+BC, 1,000 updates, reached 72% of the behaviour on focused_topdown; the bar here is the random
    latent actions, which a policy that learned nothing scores)."""
    quick = REPO / "workflow" / "presets" / "quick.yaml"
    res = snakemake("results/diffuse_mix/td3bc.json", "--cores", "2", "--configfile", str(quick), cwd=tmp_path,
                    timeout=3600)
    assert res.returncode == 0, res.stderr[-3000:]
    agg = json.loads((tmp_path / "results/diffuse_mix/td3bc.json").read_text())
    assert agg["quality"] == "expert" and agg["seeds"] == [0, 1, 2] and np.isfinite(agg["normalized_score"])
    assert agg["n_sessions"] == 500 * len(agg["seeds"])  # the 500 test users of every seed
    behaviour = agg["references"]["behaviour"]["return_mean"]
    random = agg["references"]["random"]["return_mean"]
    assert behaviour > 1.1 * random and agg["return_mean"] > random + 0.3 * (behaviour - random), (
        agg["return_mean"], behaviour, random)


def test_schema_properties_equal_the_config_dataclasses_of_every_section():
    """One config discipline: each section's dataclass (plus the keys only the workflow reads) is its schema."""
    import dataclasses

    from slate_rl.pipeline import load_schema, sections

    schema = load_schema()
    with_settings = {k for k, v in schema["properties"].items() if "properties" in v and k != "embeddings"}
    assert with_settings - {"logger"} == set(sections())  # every section with settings has its dataclass
    for section, (cls, workflow_keys) in sections().items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert section == cls.SECTION, cls
        assert set(schema["properties"][section]["properties"]) == fields | set(workflow_keys), section
        assert not fields & set(workflow_keys), section


@pytest.mark.parametrize(("section", "values", "key"), [
    ("sac", {"tau": 0.0}, "sac.tau"), ("reinforce", {"lr": 0.0}, "reinforce.lr"),
    ("slateq", {"epsilon_decay": 0.0}, "slateq.epsilon_decay"), ("td3bc", {"policy_freq": 0}, "td3bc.policy_freq"),
    ("offline", {"gamma": -0.5}, "offline.gamma"), ("online", {"medium_fraction": 1.0}, "online.medium_fraction"),
    ("cql", {"total_steps": 0}, "cql.total_steps"), ("bc", {"total_steps": 2.5}, "bc.total_steps"),
])
def test_every_section_reports_its_own_key_names(section, values, key):
    cfg = _config()
    cfg[section].update(values)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(cfg)


def test_the_schema_names_what_core_artifacts_and_the_registrations_name():
    """The schema (YAML, read by Snakemake) repeats a few names of slate_rl.core.artifacts, and the agents' are
    generated from their registrations: they must agree."""
    from slate_rl.core import artifacts
    from slate_rl.online.config import agent_names, variant_agents
    from slate_rl.pipeline import load_schema

    props = load_schema()["properties"]
    assert tuple(props["agents"]["properties"]["names"]["items"]["enum"]) == agent_names()
    assert set(props["agents"]["properties"]["variants"]["properties"]) == set(variant_agents())
    assert set(props["evaluation"]["properties"]["reference_policies"]["items"]["enum"]) == set(
        artifacts.REFERENCE_POLICIES)
    mixtures = props["offline_data"]["properties"]["mixtures"]
    assert tuple(mixtures["propertyNames"]["not"]["enum"]) == artifacts.QUALITIES
    assert tuple(mixtures["additionalProperties"]["propertyNames"]["enum"]) == artifacts.QUALITIES
    assert tuple(props["gems"]["properties"]["item_table"]["enum"]) == artifacts.GEMS_ITEM_TABLES


def test_the_chain_runs_first_and_the_longest_offline_jobs_first(tmp_path):
    """Priorities: logs > GeMS > online agents > the datasets offline policies train on > other datasets >
    offline policies, longest first; MF and reference policies fill the cores left free (make quick's
    wall time depends on it)."""
    jobs = _plan(tmp_path, {"offline": {"algos": ["td3bc", "cql", "iql", "bc", "fql", "idql", "dt", "dd"]}})
    prio = {}
    for j in jobs:
        key = j["rule"]
        if key == "offline_dataset":
            key += ":" + Path(j["output"][0]).stem
        elif key == "offline_policy":
            key += ":" + Path(j["output"][0]).parent.name
        prio[key] = j["priority"]
    assert prio["logged_sessions"] > prio["gems"] > prio["online_agent"] > prio["offline_dataset:expert"]
    assert prio["offline_dataset:expert"] > prio["offline_dataset:random"]
    order = sorted((k for k in prio if k.startswith("offline_policy:")), key=lambda k: -prio[k])
    assert [k.split(":")[1] for k in order] == ["dd", "idql", "cql", "dt", "fql", "iql", "td3bc", "bc"]
    assert prio["offline_dataset:random"] > prio[order[0]] > 0 == prio["mf_embeddings"] == prio["reference_policy"]


# --------------------------------------------------------------------- seeds per job (online and offline)


def _plan(tmp_path: Path, overlay: dict) -> list[dict]:
    """The jobs of `snakemake -n -p` on the tiny config plus ``overlay``: rule, outputs and shell command each."""
    extra = tmp_path / "overlay.yaml"
    extra.write_text(yaml.safe_dump(overlay))
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    res = snakemake("-n", "-p", "--configfile", str(TINY), str(extra), cwd=work)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    jobs = []
    for block in res.stdout.split("\nrule ")[1:]:
        lines = block.splitlines()
        fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in lines[1:] if ":" in line}
        jobs.append({"rule": lines[0].rstrip(":"), "output": fields.get("output", "").split(", "),
                     "shell": fields.get("Shell command", ""), "priority": int(fields.get("priority", 0))})
    return jobs


def test_the_swept_qualities_are_planned_with_their_inputs_and_options(tmp_path):
    """step_mix reads the medium checkpoint when it mixes with the medium behaviour (not with random actions);
    both swept qualities get the configured levels."""
    overlay = {"offline_data": {"qualities": ["step_mix", "noise_sweep"], "sweep_noises": [0.0, 0.5]},
               "offline": {"qualities": ["step_mix"]}}
    for other, reads_medium in (("medium", True), ("random", False)):
        overlay["offline_data"]["step_mix_other"] = other
        jobs = {j["output"][0].rsplit("/", 1)[-1]: j for j in _plan(tmp_path, overlay)
                if j["rule"] == "offline_dataset"}
        step, sweep = jobs["step_mix.npz"]["shell"], jobs["noise_sweep.npz"]["shell"]
        assert ("medium.ckpt" in (_option(step, "--behaviour") or "")) == reads_medium
        assert _option(step, "--step-mix-other") == other and _option(sweep, "--sweep-noises") == "0.0,0.5"
        assert _option(sweep, "--behaviour") is None


def _training_jobs(jobs: list[dict], stage: str) -> list[dict]:
    return [j for j in jobs if f"slate-rl {stage} " in j["shell"]]


def _option(shell: str, name: str) -> str | None:
    words = shell.split()
    return words[words.index(name) + 1] if name in words else None


def test_an_agent_job_carries_its_own_agent_section_only(tmp_path):
    """Each agent job's command (hence its params, which Snakemake reruns on) holds its own config section:
    editing slateq.lr changes the SlateQ job only."""
    agents = {"agents": {"names": ["sac_gems", "sac_topk_ideal", "reinforce", "slateq"], "seeds": [0]}}
    base = {j["output"][0]: j["shell"] for j in _training_jobs(_plan(tmp_path, agents), "train-agent")}
    edited = {j["output"][0]: j["shell"] for j in
              _training_jobs(_plan(tmp_path, {**agents, "slateq": {"lr": 0.5}}), "train-agent")}
    assert base.keys() == edited.keys() and len(base) == 4
    for out, shell in base.items():
        if "/slateq/" in out:
            assert "--slateq-lr=0.5" in edited[out] and "--q-lr" not in shell
        else:
            assert edited[out] == shell and "--slateq-" not in shell, out
            assert ("--reinforce-" in shell) == ("/reinforce/" in out)
            assert ("--q-lr" in shell) == ("/sac_" in out)


def test_the_reference_policies_are_one_job_per_environment_read_by_collect_and_train_offline(tmp_path):
    """One offline_references job per environment; the expert and medium collections (their label checks) and
    every offline policy job read its file, the random quality does not wait for it."""
    jobs = _plan(tmp_path, {"offline_data": {"qualities": ["expert", "medium", "random"]},
                            "offline": {"algos": ["td3bc", "dt"], "seeds": [0]}})
    refs = [j for j in jobs if j["rule"] == "offline_references"]
    assert len(refs) == 1 and refs[0]["output"] == ["data/offline/diffuse_mix/references.json"]
    assert "slate-rl offline-references " in refs[0]["shell"] and "--expert-noise" in refs[0]["shell"]
    collect = {Path(j["output"][0]).stem: j["shell"] for j in _training_jobs(jobs, "collect")}
    assert _option(collect["expert"], "--references") == _option(collect["medium"], "--references") == \
        "data/offline/diffuse_mix/references.json"
    assert _option(collect["random"], "--references") is None
    for job in _training_jobs(jobs, "train-offline"):
        assert _option(job["shell"], "--references") == "data/offline/diffuse_mix/references.json"
    assert all(_option(j["shell"], "--label-ratio") == "0.9" for j in _training_jobs(jobs, "collect"))


def test_the_logged_quality_reads_the_environments_logs(tmp_path):
    """offline_data.qualities: [logged] plans one collect job on data/logs/{env}.npz (no label check to read)."""
    jobs = _plan(tmp_path, {"offline_data": {"qualities": ["logged"]},
                            "offline": {"algos": ["bc"], "seeds": [0], "qualities": ["logged"], "quality": "logged"}})
    collect = [j["shell"] for j in _training_jobs(jobs, "collect")]
    assert len(collect) == 1 and _option(collect[0], "--quality") == "logged"
    assert _option(collect[0], "--logs") == "data/logs/diffuse_mix.npz" and "--references" not in collect[0]
    assert [_option(j["shell"], "--dataset") for j in _training_jobs(jobs, "train-offline")] == [
        "data/offline/diffuse_mix/logged.npz"]


@pytest.mark.e2e
@pytest.mark.usefixtures("single_thread")
def test_last_checkpoint_is_an_output_of_the_online_rule_and_an_input_of_replay_datasets(tmp_path):
    res = snakemake("-n", "-p", "data/offline/diffuse_mix/replay.npz", "--configfile", str(TINY), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    last = "data/agents/diffuse_mix/sac_gems_d8_beta1_lc0.5_scratch_s58407201/seed0/last.ckpt"
    jobs = {block.split("\n", 1)[0].strip(): block for block in text.split("rule ")[1:]}
    assert last in jobs["online_agent:"].split("output:")[1].split("\n")[0]
    assert last in jobs["offline_dataset:"].split("input:")[1].split("\n")[0]


GROUPED = {"agents": {"names": ["sac_gems", "reinforce"], "seeds": [0, 1, 2, 3, 4]},
           "offline": {"algos": ["td3bc"], "seeds": [0, 1, 2]}}


def test_one_seed_per_job_plans_one_job_per_seed(tmp_path):
    """seeds_per_job 1 (the default): one online_agent / offline_policy job per seed, each running --seeds with
    its one seed, and the key reaches no stage."""
    overlay = {"agents": GROUPED["agents"], "online": {"seeds_per_job": 1},
               "offline": {**GROUPED["offline"], "seeds_per_job": 1}}
    jobs = _plan(tmp_path, overlay)
    agents, offline = _training_jobs(jobs, "train-agent"), _training_jobs(jobs, "train-offline")
    assert {j["rule"] for j in agents} == {"online_agent"} and {j["rule"] for j in offline} == {"offline_policy"}
    assert sorted((_option(j["shell"], "--agent"), _option(j["shell"], "--seeds")) for j in agents) == sorted(
        (agent, str(s)) for agent in ("sac_gems_d8_beta1_lc0.5_scratch_s58407201", "reinforce") for s in range(5))
    assert sorted(_option(j["shell"], "--seeds") for j in offline) == ["0", "1", "2"]
    for job in agents + offline:
        assert "--seed" not in job["shell"].split() and "seeds-per-job" not in job["shell"], job["shell"]


def test_seeds_per_job_groups_the_seeds_of_every_agent_and_offline_algorithm(tmp_path):
    overlay = {"agents": GROUPED["agents"], "online": {"seeds_per_job": 2},
               "offline": {**GROUPED["offline"], "seeds_per_job": 2}}
    jobs = _plan(tmp_path, overlay)
    sac = "sac_gems_d8_beta1_lc0.5_scratch_s58407201"
    agents = _training_jobs(jobs, "train-agent")
    for tag in (sac, "reinforce"):  # stacked or one after another: train-agent decides, the plan is the same
        grouped = sorted((j for j in agents if _option(j["shell"], "--agent") == tag),
                         key=lambda j: _option(j["shell"], "--seeds") or "")
        assert [_option(j["shell"], "--seeds") for j in grouped] == ["0,1", "2,3", "4"]
        assert [j["rule"] for j in grouped] == [
            "online_agent_seeds_0_1", "online_agent_seeds_2_3", "online_agent_seeds_4"]
        for job, seeds in zip(grouped, ([0, 1], [2, 3], [4]), strict=True):
            assert "--seed" not in job["shell"].split() and "seeds-per-job" not in job["shell"]
            assert _option(job["shell"], "--output-dir") == f"'data/agents/diffuse_mix/{tag}/seed{{seed}}'"
            assert _option(job["shell"], "--results") == f"'results/diffuse_mix/online/{tag}/seed{{seed}}.json'"
            assert sorted(job["output"]) == sorted(
                [f"data/agents/diffuse_mix/{tag}/seed{s}/{c}.ckpt" for s in seeds for c in ("best", "medium", "last")]
                + [f"results/diffuse_mix/online/{tag}/seed{s}.json" for s in seeds])
    offline = sorted(_training_jobs(jobs, "train-offline"), key=lambda j: _option(j["shell"], "--seeds") or "")
    assert [(j["rule"], _option(j["shell"], "--seeds")) for j in offline] == [
        ("offline_policy_seeds_0_1", "0,1"), ("offline_policy_seeds_2", "2")]
    for job, seeds in zip(offline, ([0, 1], [2]), strict=True):
        assert "--seed" not in job["shell"].split()
        assert _option(job["shell"], "--policy-output") == "'data/policies/diffuse_mix/expert/td3bc/seed{seed}.pt'"
        assert sorted(job["output"]) == sorted(
            [f"data/policies/diffuse_mix/expert/td3bc/seed{s}.pt" for s in seeds]
            + [f"results/diffuse_mix/expert/td3bc/seed{s}.json" for s in seeds])
    # what reads the per-seed files is unchanged: the behaviour agent (seed 0) and the aggregate over seeds
    assert any(j["rule"] == "offline_dataset" for j in jobs)
    assert sum(j["rule"] == "offline_aggregate" for j in jobs) == 1


def test_seeds_per_job_1_and_2_plan_the_same_outputs(tmp_path):
    """Grouping seeds changes which job writes a file, never which files the plan builds, nor any other job."""
    plans = {}
    for n in (1, 2):
        overlay = {"agents": GROUPED["agents"], "online": {"seeds_per_job": n},
                   "offline": {**GROUPED["offline"], "seeds_per_job": n}}
        (tmp_path / str(n)).mkdir()
        plans[n] = _plan(tmp_path / str(n), overlay)
    outputs = {n: sorted(o for j in jobs for o in j["output"]) for n, jobs in plans.items()}
    assert outputs[1] == outputs[2] and len(outputs[1]) == len(set(outputs[1]))
    others = {n: sorted(j["shell"] for j in jobs if j["rule"].split("_seeds_")[0] not in ("online_agent",
                                                                                         "offline_policy"))
              for n, jobs in plans.items()}
    assert others[1] == others[2]


@pytest.mark.parametrize("value", [0, -2, 1.5, "two", True])
@pytest.mark.parametrize("section", ["online", "offline"])
def test_seeds_per_job_must_be_a_positive_integer(section, value):
    cfg = _config()
    cfg[section]["seeds_per_job"] = value
    with pytest.raises(ConfigError, match=rf"{section}\.seeds_per_job") as err:
        validate_config(cfg)
    assert "\n" not in str(err.value)


def test_a_bad_seeds_per_job_stops_snakemake_with_one_message(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("online: {seeds_per_job: 0}\n")
    res = snakemake("-n", "--configfile", str(overlay), cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "online.seeds_per_job" in res.stderr + res.stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_the_tiny_pipeline_built_twice_gives_the_same_bytes(tmp_path):
    """Same config, seeds, threads and machine: every declared output under data/ and results/ is the same
    bytes in two fresh trees (wall-clock figures live only in *.timings.json, which are left out)."""
    trees = [tmp_path / "a", tmp_path / "b"]
    for tree in trees:
        tree.mkdir()
        res = snakemake("--cores", "2", "--configfile", str(TINY), cwd=tree, timeout=1800)
        assert res.returncode == 0, res.stderr[-3000:]

    def outputs(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for top in ("data", "results")
                for p in sorted((root / top).rglob("*"))
                if p.is_file() and not p.name.endswith(".timings.json") and ".work." not in p.name}

    first, second = outputs(trees[0]), outputs(trees[1])
    assert sorted(first) == sorted(second)
    differ = [name for name in first if first[name] != second[name]]
    assert not differ, f"outputs that differ between two identical builds: {differ}"
