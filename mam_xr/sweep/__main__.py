"""``python -m mam_xr.sweep SPEC DIRECTORY [options]``: run or resume a sweep."""

import sys

from .command import main

sys.exit(main())
