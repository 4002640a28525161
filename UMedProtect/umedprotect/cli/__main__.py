"""``python -m umedprotect.cli``: the umedprotect command without the console script."""

import sys

from . import main

sys.exit(main())
