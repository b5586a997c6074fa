"""`python -m genpref` = the `genpref` command."""

import sys

from genpref.cli import main

sys.exit(main())
