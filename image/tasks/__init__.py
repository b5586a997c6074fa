"""The synthetic image tasks, apart from the product: the `shapes` task (renderer, verifier, its pixel-space
UNet `shapes-unet`, the demo and benchmark part) and the tiny coloured-shape data of the tiny-sd test configs
(`tiny://...`). Importing this package registers their names with genpref.registry; nothing is imported
until a name is used, and no production module of image/ imports them."""

from genpref import registry

registry.model_kind("shapes-unet", "image.tasks.shapes.model")  # the shapes task's pixel-space UNet
registry.reward("shapes", "image.tasks.shapes.reward")  # exact verifier of the shapes task: fraction of attributes right
registry.reward("shapes_graded", "image.tasks.shapes.reward")  # the same, with partial credit for near misses
registry.reward("shapes_strict", "image.tasks.shapes.reward")  # 1 when every attribute is right, else 0
registry.data_scheme("image", "shapes://", "image.tasks.shapes.data")  # the shapes task's data, written on first use
registry.data_scheme("image", "tiny://", "image.tasks.tiny_data")  # tiny coloured shapes for the tiny-sd configs
registry.prompt_set("shapes", "image.tasks.shapes.data")  # eval.prompts: shapes = the held-out combinations
registry.demo_part("image", "image.tasks.shapes.demo")  # the image half of `genpref demo` / `bench quality`
