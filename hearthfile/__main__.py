"""``python -m hearthfile`` runs the command line."""

import sys

try:
    from hearthfile.cli import main
except KeyboardInterrupt:  # Ctrl-C while the program loads: the same one line as later
    sys.stderr.write("hearthfile: interrupted\n")
    sys.exit(130)

sys.exit(main())
