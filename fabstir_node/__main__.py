"""``python -m fabstir_node`` is ``fabstir-node``."""

import sys

from .cli import main

sys.exit(main())
