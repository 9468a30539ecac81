"""``python -m croft`` (also the torchrun entry: ``torchrun … -m croft extract …``)."""

import sys

from croft.cli.main import main

sys.exit(main())
