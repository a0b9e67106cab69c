#!/usr/bin/env bash
# Used by `make test`: tests/test_slurm.py starts a one-node SLURM cluster (and skips without one): install the
# Debian packages it needs. A no-op when they are there; never fails the run (the test skips).
slurm_bins=(munged slurmctld slurmd sbatch srun squeue sinfo scontrol scancel)
missing=0
for b in "${slurm_bins[@]}"; do command -v "$b" >/dev/null 2>&1 || missing=1; done
if [ "$missing" = 1 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing SLURM for tests/test_slurm.py (slurmctld slurmd slurm-client munge)..."
        if ! { apt-get update -qq \
               && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                      slurmctld slurmd slurm-client munge; } >/tmp/ci-apt-slurm.log 2>&1; then
            echo "warning: could not install SLURM (see /tmp/ci-apt-slurm.log); tests/test_slurm.py will skip" >&2
        fi
    else
        echo "warning: SLURM is not installed and apt-get/root is unavailable; tests/test_slurm.py will skip" >&2
    fi
fi

exit 0
