"""``python -m runners.tuning <results_dir> [--rerun-seeds N] [--run]``: see runners.tuning.tune."""

import sys

from .tune import main

sys.exit(main())
