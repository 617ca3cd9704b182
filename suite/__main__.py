"""``python -m suite``: the ``gfvc`` command line."""
import sys

from suite.cli.main import main

sys.exit(main())
