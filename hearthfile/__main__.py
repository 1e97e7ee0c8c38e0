"""``python -m hearthfile`` runs the command line."""

import sys

from hearthfile.cli import main

sys.exit(main())
