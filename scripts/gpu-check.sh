#!/usr/bin/env bash
# GPU check: on a machine with CUDA, run in under 8 minutes
#   1. the tiny pipeline (tests/data/tiny.yaml) end to end with device=cuda,
#   2. the CUDA tests (pytest -m cuda: tests/test_cuda.py),
#   3. slate-rl bench sim | gems | online | offline --device cuda,
# and write one JSON of figures (each step's status and wall time, the test counts, every bench table).
#
# usage: scripts/gpu-check.sh [--dry-cpu] [OUTPUT.json]
#   OUTPUT.json   where the figures go (default: $OUT/gpu-check.json when $OUT is set, else ./gpu-check.json)
#   --dry-cpu     run the same commands on the CPU with tiny sizes (proves the commands; no CUDA needed,
#                 the CUDA tests then report as skipped)
# environment:
#   PYTHON        the interpreter to use (default: .venv/bin/python when it has torch, else a venv
#                 .venv-gpu created with the system's packages, where a CUDA torch is expected)
#   CORES         cores given to Snakemake (default: all)
#   BUDGET_S      total time limit in seconds (default: 470); each step is cut at what is left
# Exit status: 0 when every step passed, 1 when one failed (the JSON says which), 2 when CUDA is missing
# (without --dry-cpu) or the environment cannot run the project.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_CPU=0
OUTPUT=""
for arg in "$@"; do
    case "$arg" in
        --dry-cpu) DRY_CPU=1 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "error: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) OUTPUT="$arg" ;;
    esac
done
if [[ -z "$OUTPUT" ]]; then
    OUTPUT="${OUT:+$OUT/}gpu-check.json"
fi
BUDGET_S="${BUDGET_S:-470}"
START_S=$(date +%s)
cd "$REPO"

# ------------------------------------------------------------------ interpreter
has_torch() { "$1" -c "import torch" >/dev/null 2>&1; }
if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -x .venv/bin/python ]] && has_torch .venv/bin/python; then
    PY="$REPO/.venv/bin/python"
else
    if [[ ! -x .venv-gpu/bin/python ]]; then
        echo "creating .venv-gpu (with the system's packages)"
        python3 -m venv --system-site-packages .venv-gpu
        # Offline machines: the system's packages provide the dependencies; install only the project.
        .venv-gpu/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
            || echo "note: pip could not install the project; running it from the source tree (PYTHONPATH)"
    fi
    PY="$REPO/.venv-gpu/bin/python"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import torch, snakemake, pytest, slate_rl.cli" 2>/dev/null; then
    echo "error: $PY cannot import torch, snakemake, pytest and slate_rl; install the project" \
         "(make .venv/.installed, or pip install -e '.[dev]' with a CUDA torch) or set PYTHON" >&2
    exit 2
fi

if [[ "$DRY_CPU" == 1 ]]; then
    DEVICE=cpu
else
    DEVICE=cuda
    if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        "$PY" -c "import torch; print(f'error: no CUDA device visible to torch {torch.__version__} '
                    f'(built with CUDA {torch.version.cuda}); run this on a GPU machine, '
                    'or pass --dry-cpu to check the commands on the CPU')" >&2
        exit 2
    fi
fi

# slate-rl and snakemake on PATH, from this interpreter (the Snakemake rules call slate-rl)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/bench"
printf '#!/bin/sh\nexec "%s" -m slate_rl "$@"\n' "$PY" > "$WORK/bin/slate-rl"
printf '#!/bin/sh\nexec "%s" -m snakemake "$@"\n' "$PY" > "$WORK/bin/snakemake"
chmod +x "$WORK/bin/slate-rl" "$WORK/bin/snakemake"
export PATH="$WORK/bin:$PATH"
echo "gpu-check: device=$DEVICE python=$PY work=$WORK output=$OUTPUT"

# ------------------------------------------------------------------ steps
STEPS="$WORK/steps.tsv"
: > "$STEPS"
FAILED=0
# run_step NAME LIMIT_S COMMAND...: run with a time limit (cut at the budget left), log, record status and time
run_step() {
    local name="$1" limit="$2"
    shift 2
    local left=$((BUDGET_S - ($(date +%s) - START_S)))
    if (( DRY_CPU == 1 || left < limit )); then limit=$left; fi  # a CPU's speed is unknown: the budget only
    if (( limit < 5 )); then
        printf '%s\tskipped (budget spent)\t0\t%s\n' "$name" "$*" >> "$STEPS"
        echo "[$name] skipped: the ${BUDGET_S}s budget is spent"
        FAILED=1
        return 0
    fi
    echo "[$name] $* (limit ${limit}s)"
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    local status=ok seconds
    seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    if (( rc == 124 || rc == 137 )); then status="timed out after ${limit}s"; elif (( rc != 0 )); then status="failed (exit $rc)"; fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$seconds" "$*" >> "$STEPS"
    echo "[$name] $status in ${seconds}s"
    if [[ "$status" != ok ]]; then
        FAILED=1
        tail -n 20 "$WORK/logs/$name.log" | sed "s/^/[$name] /"
    fi
    return 0
}

if [[ "$DRY_CPU" == 1 ]]; then  # tiny sizes: the commands, not the figures
    SIM_ARGS=(--batch-sizes "1,64" --min-seconds 0.2)
    GEMS_ARGS=(--steps 3)
    ONLINE_ARGS=(--steps 2 --parallel 2)
    OFFLINE_ARGS=(--min-seconds 0.3 --algos "td3bc,iql")
else
    SIM_ARGS=(--batch-sizes "1,1024,8192,65536" --min-seconds 2)
    GEMS_ARGS=(--steps 200)
    ONLINE_ARGS=(--steps 50)
    OFFLINE_ARGS=(--min-seconds 3)
fi
# multi-seed rows where this version of the online benchmark has them
if slate-rl bench --help 2>/dev/null | grep -q -- "--seeds"; then
    ONLINE_ARGS+=(--seeds "1,10")
fi

run_step pipeline 240 snakemake --snakefile "$REPO/Snakefile" --directory "$WORK/pipeline" \
    --cores "${CORES:-all}" --configfile "$REPO/tests/data/tiny.yaml" --config "device=$DEVICE"
run_step cuda_tests 150 "$PY" -m pytest -m cuda -p no:cacheprovider -q "$REPO/tests" --junitxml "$WORK/cuda-tests.xml"
run_step bench_sim 40 slate-rl bench sim --device "$DEVICE" "${SIM_ARGS[@]}" --output "$WORK/bench/sim.json"
run_step bench_gems 60 slate-rl bench gems --device "$DEVICE" "${GEMS_ARGS[@]}" --output "$WORK/bench/gems.json"
run_step bench_online 90 slate-rl bench online --device "$DEVICE" "${ONLINE_ARGS[@]}" --output "$WORK/bench/online.json"
run_step bench_offline 90 slate-rl bench offline --device "$DEVICE" "${OFFLINE_ARGS[@]}" \
    --output "$WORK/bench/offline.json"

# ------------------------------------------------------------------ one JSON of figures
mkdir -p "$(dirname "$OUTPUT")"
"$PY" - "$WORK" "$OUTPUT" "$DEVICE" "$DRY_CPU" "$(( $(date +%s) - START_S ))" <<'EOF'
import json, os, platform, sys, xml.etree.ElementTree as ET
from pathlib import Path

import torch

work, output, device, dry_cpu, total = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1", int(sys.argv[5])
steps = []
for line in (work / "steps.tsv").read_text().splitlines():
    name, status, seconds, command = line.split("\t", 3)
    step = {"name": name, "status": status, "seconds": round(float(seconds), 1), "command": command}
    log = work / "logs" / f"{name}.log"
    if status != "ok" and log.is_file():
        step["log_tail"] = log.read_text(errors="replace")[-3000:]
    steps.append(step)
tests = None
if (work / "cuda-tests.xml").is_file():
    suite = ET.parse(work / "cuda-tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    tests = {**n, "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"],
             "seconds": float(suite.get("time", 0.0)),
             "cases": [{"name": c.get("name"), "seconds": float(c.get("time", 0.0)),
                        "outcome": next((ch.tag for ch in c), "passed")} for c in suite.iter("testcase")]}
pipeline = {}
for path in sorted((work / "pipeline" / "results").rglob("*.json")) if (work / "pipeline" / "results").is_dir() else []:
    r = json.loads(path.read_text())
    if isinstance(r, dict) and "return_mean" in r:
        pipeline[str(path.relative_to(work / "pipeline"))] = r["return_mean"]
bench = {p.stem: json.loads(p.read_text()) for p in sorted((work / "bench").glob("*.json"))}
figures = {
    "device": device, "dry_cpu": dry_cpu, "ok": all(s["status"] == "ok" for s in steps), "total_seconds": total,
    "machine": {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                "torch": torch.__version__, "cuda": torch.version.cuda},
    "steps": steps, "cuda_tests": tests, "pipeline_returns": pipeline, "bench": bench,
}
tmp = f"{output}.tmp"
with open(tmp, "w") as f:
    json.dump(figures, f, indent=1)
os.replace(tmp, output)
print(f"gpu-check: {'all steps passed' if figures['ok'] else 'FAILED: ' + ', '.join(s['name'] for s in steps if s['status'] != 'ok')}"
      f" in {total}s; figures in {output}")
EOF
exit "$FAILED"
