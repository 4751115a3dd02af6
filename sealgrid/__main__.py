"""``python -m sealgrid`` runs the command line."""

import sys

from sealgrid.cli import main

sys.exit(main())
