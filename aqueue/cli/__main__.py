"""``python -m aqueue.cli``: the same command as the ``aqueue`` console script."""

import sys

from . import main

sys.exit(main())
