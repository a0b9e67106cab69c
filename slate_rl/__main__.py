"""``python -m slate_rl`` is ``slate-rl``."""

import sys

from slate_rl.cli import main

sys.exit(main())
