"""The synthetic motion tasks, apart from the product: the `moves` task (grammar, animation, verifier, the
dataset, its shipped weights, the demo and benchmark part) and the tiny HumanML3D-format data of the tiny
MDM/MLD test configs (`tiny://humanml`). Importing this package registers their names with
genpref.registry; nothing is imported until a name is used, and no production module of motion/ imports them."""

from genpref import registry

registry.reward("moves", "motion.tasks.moves.reward")  # exact verifier of the moves task: fraction of attributes right
registry.reward("moves_graded", "motion.tasks.moves.reward")  # the same, with partial credit for near misses
registry.reward("moves_strict", "motion.tasks.moves.reward")  # 1 when every attribute is right, else 0
registry.reward("tiny-motion", "motion.tasks.tiny_data")  # verifier of the synthetic tiny motion actions
registry.data_scheme("motion", "tiny://", "motion.tasks.tiny_data")  # tiny://humanml (data.root), tiny://pairs, tiny://ratings
registry.demo_part("motion", "motion.tasks.moves.demo")  # the motion half of `genpref demo` / `bench quality`
