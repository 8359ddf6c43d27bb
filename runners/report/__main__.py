"""``python -m runners.report <results_dir> [--out DIR]``: see runners/report/__init__.py."""

import sys

from .build import main

sys.exit(main())
