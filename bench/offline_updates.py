"""Offline RL update benchmark: ``python bench/offline_updates.py [options]``.

Same as ``slate-rl bench offline``; prints gradient steps/s of TD3+BC, CQL, IQL and BC at batch 256
for our implementation and a CORL-style eager loop, and their ratio, measured in the same run.
"""

import sys

from slate_rl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "offline", *sys.argv[1:]]))
