"""`python -m motion.tasks.moves build|check`: the moves dataset's command line."""

from motion.tasks.moves.dataset import main

main()
