"""`python -m motion.train CONFIG [section.key=value ...]`: train a motion recipe (same as `genpref train`)."""

from __future__ import annotations

import sys

from genpref.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
