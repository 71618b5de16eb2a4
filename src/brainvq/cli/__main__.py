"""``python -m brainvq.cli``: the same as the ``brainvq`` command."""

import sys

from brainvq.cli import main

sys.exit(main())
