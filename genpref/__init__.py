"""genpref: preference fine-tuning (Diffusion-DRO, SoPo, Diffusion-DPO/KTO) for image and motion diffusion models."""

__version__ = "0.1.0"
