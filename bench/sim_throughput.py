"""Simulator throughput benchmark: ``python bench/sim_throughput.py [options]``.

Same as ``slate-rl bench sim``; prints env steps/s for B in {1, 64, 1024, 8192} with the random
and the oracle policy, and the ratio to B = 1 measured in the same run.
"""

import sys

from slate_rl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "sim", *sys.argv[1:]]))
