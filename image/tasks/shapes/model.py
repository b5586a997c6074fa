"""`model.kind: shapes-unet`: a small pixel-space UNet2DConditionModel for the `shapes` task, conditioned on
attribute tokens instead of a CLIP text encoder, and its weight files.

A prompt becomes three one-hot tokens (colour, shape, position; a "none" token per slot when the prompt
does not name it) that the UNet projects to its cross-attention width (`encoder_hid_proj`), and their
multi-hot sum, projected by `class_embedding` into the timestep embedding (FiLM on every ResNet block).
A prototype on a 2-core CPU found both paths necessary for the model to learn conditioning at all.
Cross-attention runs only at the 8×8 level: at 16×16 it made steps 2.5× slower. No VAE (identity codec).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from genpref.errors import UserError
from image.tasks.shapes import COLOURS, POSITIONS, SHAPES, parse

# the token vocabulary: every attribute value, then one "none" token per slot
SLOTS = (tuple(COLOURS), SHAPES, POSITIONS)
VOCAB = [v for slot in SLOTS for v in slot] + ["<no colour>", "<no shape>", "<no position>"]
WEIGHTS_FILE = "shapes_unet.safetensors"

# model.size -> UNet block widths at 32, 16 and 8 px
SIZES = {"default": (32, 64, 64), "small": (16, 32, 64)}


def build_unet(size: str = "default", seed: int = 0) -> nn.Module:
    """The shapes UNet with random weights, deterministic in `seed` (~1.5 M parameters at "default")."""
    from diffusers import UNet2DConditionModel

    if size not in SIZES:
        raise UserError(f"model.size: unknown shapes-unet size {size!r}; valid: {', '.join(SIZES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            block_out_channels=SIZES[size],
            layers_per_block=1,
            cross_attention_dim=64,
            attention_head_dim=16,
            norm_num_groups=8,
            encoder_hid_dim=len(VOCAB),  # one-hot tokens -> cross-attention width
            class_embed_type="projection",  # multi-hot attributes -> timestep embedding
            projection_class_embeddings_input_dim=len(VOCAB),
        )


def noise_schedule(prediction_type: str = "v_prediction"):
    """Cosine (squaredcos_cap_v2) betas over 1000 steps with trailing spacing for few-step sampling; the
    prototype learned no conditioning with SD's linear betas at this size.

    v-prediction by default: the cosine schedule's ᾱ at t = 999 is 2.4e-9, so an ε-prediction model's
    x0 = (x − √(1−ᾱ)·ε̂)/√ᾱ multiplies the ε error by 2·10⁴ at the first sampler step; an ε-model trained
    here sampled noise, while v gives x0 = √ᾱ·x − √(1−ᾱ)·v̂, well conditioned at every t. Samplers also
    clip their x0 estimate to the pixel range [-1, 1] (thresholding with sample_max_value 1; every sampler
    made from this config inherits it)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type,
                         timestep_spacing="trailing", clip_sample=True, clip_sample_range=1.0,
                         thresholding=True, dynamic_thresholding_ratio=0.995, sample_max_value=1.0)


def tokens(prompt: str) -> list[int]:
    """Three token ids: (colour, shape, position), "none" where the prompt names no such attribute."""
    none_tokens = range(len(VOCAB) - len(SLOTS), len(VOCAB))
    return [VOCAB.index(value) if value is not None else none for value, none in zip(parse(prompt), none_tokens)]


class AttributePromptEncoder:
    """Prompts -> {"encoder_hidden_states": one-hot tokens [B, 3, V], "class_labels": their sum [B, V]}.

    Fixed, not learned: the UNet's own projections learn the embedding, so the base model's training
    learns it too and the content-keyed prompt cache never goes stale."""

    identity = "shapes-attributes:" + "|".join(VOCAB)

    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([tokens(p) for p in prompts])  # [B, 3]
        one_hot = nn.functional.one_hot(ids, len(VOCAB)).float()  # [B, 3, V]
        return {"encoder_hidden_states": one_hot, "class_labels": one_hot.sum(1)}


def save(unet: nn.Module, out_dir: str | Path) -> Path:
    """`out_dir/shapes_unet.safetensors` (the weights) + `out_dir/unet/` (diffusers format, config included)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in unet.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt", "model": "shapes-unet"})
    unet.save_pretrained(str(out_dir / "unet"), safe_serialization=True)
    return out_dir / WEIGHTS_FILE


def load(path: str | Path | None, size: str = "default", seed: int = 0) -> nn.Module:
    """model.path: None (random init), a .safetensors file of weights, a directory holding
    shapes_unet.safetensors (a run's final/), or a diffusers UNet directory (with config.json)."""
    from safetensors.torch import load_file

    if path is None:
        return build_unet(size, seed)
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / WEIGHTS_FILE).is_file():
            path = path / WEIGHTS_FILE
        else:
            unet_dir = path / "unet" if (path / "unet" / "config.json").is_file() else path
            if not (unet_dir / "config.json").is_file():
                raise UserError(f"model.path: {path} holds neither {WEIGHTS_FILE} nor a diffusers UNet (config.json)")
            from diffusers import UNet2DConditionModel

            return UNet2DConditionModel.from_pretrained(str(unet_dir))
    if not path.is_file():
        raise UserError(f"model.path: shapes-unet weights not found: {path}")
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises SafetensorError / OSError on damaged files
        raise UserError(f"model.path: {path} is not a readable safetensors file ({err})") from None
    unet = build_unet(size, seed)
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise UserError(f"model.path: {path} does not fit the shapes-unet of model.size={size!r} "
                        f"({len(missing)} missing, {len(unexpected)} unexpected weights, e.g. {example})")
    return unet


def load_components(model_cfg, seed: int = 0):
    """Components for the image adapter: the UNet, no VAE, no CLIP (the attribute encoder replaces it), and
    its own weight files for a full fine-tune (there is no pipeline to save)."""
    from image.models import Components

    unet = load(model_cfg.path, model_cfg.size, seed)
    scheduler = noise_schedule(model_cfg.prediction_type or "v_prediction")
    return Components("shapes", unet, None, [], [], scheduler, str(model_cfg.path or "random init"),
                      prompt_encoder=AttributePromptEncoder(), save_weights=save)


def build_adapter(cfg, device, weight_dtype):
    """genpref.build entry point for model.kind shapes-unet: the image adapter around this UNet."""
    from image.adapter import ImageAdapter
    from image.models import quiet

    with quiet():
        return ImageAdapter(load_components(cfg.model, cfg.train.seed), cfg, device, weight_dtype)
