"""Stable Diffusion components (UNet, VAE, CLIP text encoders, tokenizers, training scheduler) from a
diffusers directory, a hub id, a single .safetensors file, or built tiny from config for tests."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genpref.errors import UserError

HUB_DEFAULTS = {  # model.path when the config leaves it empty
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}
FAMILY = {"sd15": "sd", "sdxl": "sdxl", "tiny-sd": "sd", "tiny-sdxl": "sdxl"}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

# Tiny presets: (UNet channels, VAE channels, text width). "default" runs a step in ~0.1 s on a 2-core CPU.
TINY_SIZES = {
    "default": {"unet": (32, 64), "vae": (32, 64), "text": 32},
    "small": {"unet": (64, 128), "vae": (64, 128), "text": 64},
}


@dataclass
class Components:
    """Everything a text-to-image diffusion model needs, as loaded; the adapter decides dtypes and devices."""

    family: str  # "sd": one text encoder | "sdxl": two, pooled embeddings and time ids
    unet: nn.Module
    vae: nn.Module | None  # None = the UNet works in pixel space
    text_encoders: list[nn.Module]
    tokenizers: list[Any]
    scheduler: Any  # DDPMScheduler: the training noise schedule (add_noise, prediction_type)
    source: str  # where the weights came from, for messages
    prompt_encoder: Any = None  # conditions without text encoders (encode(prompts) -> cond dict); None = CLIP
    save_weights: Callable[[nn.Module, str], Any] | None = None  # (unet, out_dir): a full fine-tune's weights
    # where no diffusers pipeline can be made of the components (no text encoder, no VAE)


# ---------------------------------------------------------------------------------------------- tiny models


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to a printable unicode character."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def write_tiny_tokenizer(directory: str | Path) -> Path:
    """Write a byte-level CLIP vocabulary with no merges (one token per character) to `directory`.

    Loading it with `CLIPTokenizer.from_pretrained(directory)` works offline with transformers 4 and 5
    (transformers 5 silently ignores vocab_file/merges_file passed to the constructor)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": len(alphabet) + i for i, c in enumerate(alphabet)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return directory


def tiny_tokenizer(directory: str | Path) -> Any:
    from transformers import CLIPTokenizer

    write_tiny_tokenizer(directory)
    # model_max_length: without it the tokenizer reports ~1e30 and pipelines pad to that.
    return CLIPTokenizer.from_pretrained(str(directory), model_max_length=77)


def _tiny_text_encoder(width: int, vocab_size: int, with_projection: bool) -> nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=width,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,  # != 2: the pooled output is taken at the first end-of-text token
        pad_token_id=vocab_size - 1,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _tiny_unet(family: str, channels: tuple[int, int], cross_dim: int, pooled_dim: int) -> nn.Module:
    from diffusers import UNet2DConditionModel

    common = dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=channels,
        cross_attention_dim=cross_dim,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    if family == "sd":
        return UNet2DConditionModel(
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            **common,
        )
    time_dim = 8  # SDXL: each of the 6 time ids gets a sinusoidal embedding of this width
    return UNet2DConditionModel(
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + pooled_dim,
        use_linear_projection=True,
        **common,
    )


def _tiny_vae(channels: tuple[int, int]) -> nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=32,
    )


def training_scheduler(prediction_type: str = "epsilon") -> Any:
    """SD's training schedule: 1000 steps, scaled-linear betas 0.00085 → 0.012."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type=prediction_type,
        steps_offset=1,
    )


def build_tiny(family: str, size: str = "default", seed: int = 0, tokenizer_dir: str | Path | None = None) -> Components:
    """Random tiny SD (family "sd") or SDXL ("sdxl") with the real architecture's wiring, deterministic in `seed`."""
    import tempfile

    if size not in TINY_SIZES:
        raise UserError(f"model.size: unknown tiny size {size!r}; valid: {', '.join(TINY_SIZES)}")
    preset = TINY_SIZES[size]
    width = preset["text"]
    tokenizer_dir = Path(tokenizer_dir or tempfile.mkdtemp(prefix="genpref-tok-"))
    n_encoders = 2 if family == "sdxl" else 1
    tokenizers = [tiny_tokenizer(tokenizer_dir / f"tokenizer_{i}") for i in range(n_encoders)]
    vocab_size = len(tokenizers[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoders = [_tiny_text_encoder(width, vocab_size, with_projection=i == 1) for i in range(n_encoders)]
        unet = _tiny_unet(family, preset["unet"], cross_dim=width * n_encoders, pooled_dim=width)
        vae = _tiny_vae(preset["vae"])
    return Components(family, unet, vae, encoders, tokenizers, training_scheduler(), f"tiny-{family} ({size})")


# ---------------------------------------------------------------------------------------------- pipelines


def make_pipeline(c: Components, scheduler: Any | None = None) -> Any:
    """A diffusers pipeline over the same modules (no copies): for saving and for users' own sampling."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = scheduler or c.scheduler
    if c.family == "sdxl":
        return StableDiffusionXLPipeline(
            vae=c.vae,
            text_encoder=c.text_encoders[0],
            text_encoder_2=c.text_encoders[1],
            tokenizer=c.tokenizers[0],
            tokenizer_2=c.tokenizers[1],
            unet=c.unet,
            scheduler=scheduler,
        )
    return StableDiffusionPipeline(
        vae=c.vae,
        text_encoder=c.text_encoders[0],
        tokenizer=c.tokenizers[0],
        unet=c.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_pipeline(c: Components, out_dir: str | Path) -> Path:
    """Write the components as a diffusers pipeline directory (what `model.path` and `from_pretrained` read)."""
    out_dir = Path(out_dir)
    make_pipeline(c).save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


# ---------------------------------------------------------------------------------------------- loading


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "~")) and "\\" not in path


def _family_of_dir(path: Path, default: str) -> str:
    index = path / "model_index.json"
    if index.is_file():
        cls = json.loads(index.read_text()).get("_class_name", "")
        return "sdxl" if "XL" in cls else "sd"
    return "sdxl" if (path / "text_encoder_2").is_dir() else default


def _from_pretrained(source: str, family: str, local: bool) -> Components:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    kw = {"local_files_only": True} if local or _offline() else {}
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", **kw)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **kw)
    scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **kw)
    tokenizers = [CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw)]
    encoders = [CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kw)]
    if family == "sdxl":
        tokenizers.append(CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2", **kw))
        encoders.append(CLIPTextModelWithProjection.from_pretrained(source, subfolder="text_encoder_2", **kw))
    return Components(family, unet, vae, encoders, tokenizers, scheduler, source)


def _from_single_file(path: Path, family: str) -> Components:
    from diffusers import DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    kw = {"local_files_only": True} if _offline() else {}
    try:
        pipe = cls.from_single_file(str(path), **kw)
    except Exception as err:  # diffusers raises many types here (missing configs offline, wrong keys)
        raise UserError(
            f"model.path: could not load single-file checkpoint {path} ({type(err).__name__}: {err}). "
            "from_single_file needs the model's diffusers configs from the hub (cached once with network); "
            "offline, convert it once to a diffusers directory and point model.path at that directory"
        ) from None
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if family == "sdxl" else [])
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    return Components(family, pipe.unet, pipe.vae, encoders, tokenizers, scheduler, str(path))


def load_components(kind: str, path: str | None, size: str = "default", vae_path: str | None = None,
                    prediction_type: str | None = None, tiny_dir: str | Path | None = None) -> Components:
    """Load `model.kind` from `model.path` (local dir, single file or hub id); tiny kinds build from config
    when path is empty. `prediction_type` overrides the scheduler's (epsilon | v_prediction | sample)."""
    if kind not in FAMILY:
        raise UserError(f"model.kind: {kind!r} is not an image model; valid: {', '.join(FAMILY)}")
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise UserError(f"model.prediction_type: {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")
    family = FAMILY[kind]
    if kind.startswith("tiny") and not path:
        c = build_tiny(family, size, tokenizer_dir=tiny_dir)
    else:
        c = _load_path(path or HUB_DEFAULTS[kind], family)
    if vae_path:
        c.vae = _load_vae(vae_path)
    if prediction_type:
        c.scheduler.register_to_config(prediction_type=prediction_type)
    return c


def _load_path(source: str, family: str) -> Components:
    path = Path(source).expanduser()
    if path.suffix in (".safetensors", ".ckpt"):
        if not path.is_file():
            raise UserError(f"model.path: checkpoint file not found: {path}")
        if path.suffix == ".ckpt":
            raise UserError(f"model.path: {path} is a pickled .ckpt; convert it to .safetensors (unsafe to load)")
        return _from_single_file(path, family)
    if path.is_dir():
        if not (path / "unet").is_dir():
            raise UserError(f"model.path: {path} is not a diffusers model directory (no unet/ folder in it)")
        try:
            return _from_pretrained(str(path), _family_of_dir(path, family), local=True)
        except pickle.UnpicklingError:  # transformers/diffusers load .bin with torch.load(weights_only=True)
            raise UserError(f"model.path: {path} holds pickled .bin weights that are not plain tensors; refused "
                            "(nothing was run): convert them to .safetensors") from None
        except (OSError, ValueError) as err:
            raise UserError(f"model.path: could not load the diffusers directory {path}: {err}") from None
    if not _looks_like_hub_id(source):
        raise UserError(f"model.path: model directory not found: {path}")
    try:
        return _from_pretrained(source, family, local=False)
    except (OSError, ValueError) as err:
        if _offline():
            raise UserError(
                f"model.path: '{source}' is a hub id and the model is not available offline (HF_HUB_OFFLINE is set "
                "and it is not in the local Hugging Face cache). Download it where there is network "
                "(e.g. `huggingface-cli download " + source + "`) and set model.path to that local directory"
            ) from None
        raise UserError(
            f"model.path: could not load '{source}' from the hub ({err}). Check the id and your network, "
            "or set model.path to a local diffusers directory"
        ) from None


def _load_vae(source: str) -> nn.Module:
    from diffusers import AutoencoderKL

    path = Path(source).expanduser()
    try:
        if path.is_dir():
            sub = "vae" if (path / "vae").is_dir() else None
            return AutoencoderKL.from_pretrained(str(path), subfolder=sub, local_files_only=True)
        if path.suffix == ".safetensors" and path.is_file():
            return AutoencoderKL.from_single_file(str(path))
        if _looks_like_hub_id(source):
            return AutoencoderKL.from_pretrained(source, local_files_only=_offline())
    except (OSError, ValueError) as err:
        hint = " (HF_HUB_OFFLINE is set: point model.vae_path at a local directory)" if _offline() else ""
        raise UserError(f"model.vae_path: could not load VAE '{source}': {err}{hint}") from None
    raise UserError(f"model.vae_path: VAE not found: {source}")


# ---------------------------------------------------------------------------------------------- identity


def fingerprint(module: nn.Module | None, extra: str = "") -> str:
    """A short content hash of a module's weights (config-free): equal weights give equal fingerprints.

    Large tensors are sampled at a fixed stride (every weight of a fine-tune changes, so a strided sample
    tells checkpoints apart) to keep this under a second for SDXL's text encoders."""
    import hashlib

    h = hashlib.sha256(extra.encode())
    if module is None:
        return h.hexdigest()[:16]
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        if flat.numel() > 65536:
            flat = flat[:: flat.numel() // 65536 + 1]
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(flat.float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- codecs


@contextmanager
def visiting(module: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Run `module` on `device` for the block, then move it back home. Encoders parked on the CPU visit the
    GPU only for cache misses and decodes, so a cached run keeps just the UNet there."""
    home = next(module.parameters()).device
    if home == torch.device(device):
        yield module
        return
    module.to(device)
    try:
        yield module
    finally:
        module.to(home)


class VaeCodec:
    """Pixels in [-1, 1] <-> scaled VAE latents (the space SD's UNet denoises). Encodes the posterior mean:
    SD's posterior std is tiny, and a deterministic latent is what makes caching by content exact.
    Computes on `device` (default: where the VAE lives); returns tensors there."""

    def __init__(self, vae: nn.Module, device: torch.device | None = None):
        self.vae = vae
        self.device = torch.device(device) if device is not None else next(vae.parameters()).device
        self.scale = vae.config.scaling_factor
        self.shift = getattr(vae.config, "shift_factor", None) or 0.0
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.channels = vae.config.latent_channels
        self.identity = "vae:" + fingerprint(vae)

    def _dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        with visiting(self.vae, self.device):
            mean = self.vae.encode(pixels.to(self.device, self._dtype())).latent_dist.mean
        return (mean.float() - self.shift) * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        with visiting(self.vae, self.device):
            z = (latents.to(self.device) / self.scale + self.shift).to(self._dtype())
            return self.vae.decode(z).sample.float()


class IdentityCodec:
    """No VAE: the denoiser works on pixels in [-1, 1] directly (pixel-space UNets)."""

    factor, identity = 1, "pixels"

    def __init__(self, channels: int = 3):
        self.channels = channels

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.float()

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return x0.float()


class ClipPromptEncoder:
    """Prompts -> SD/SDXL text conditioning, per prompt (no batch-level state), as the pipelines compute it.

    sd:   {"encoder_hidden_states": last hidden state [B, 77, D]}
    sdxl: {"encoder_hidden_states": penultimate hidden states of both encoders concatenated [B, 77, D1 + D2],
           "text_embeds": the second encoder's projected pooled output [B, P]}
    """

    def __init__(self, family: str, text_encoders: list[nn.Module], tokenizers: list[Any],
                 device: torch.device | None = None):
        self.family, self.encoders, self.tokenizers = family, text_encoders, tokenizers
        self.device = torch.device(device) if device is not None else next(text_encoders[0].parameters()).device
        toks = "|".join(f"{len(t)}:{t.model_max_length}" for t in tokenizers)
        self.identity = f"{family}:{toks}:" + ":".join(fingerprint(e) for e in text_encoders)

    def _ids(self, tokenizer: Any, prompts: list[str], device: torch.device) -> torch.Tensor:
        return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(device)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        device = self.device
        if self.family == "sd":
            ids = self._ids(self.tokenizers[0], prompts, device)
            with visiting(self.encoders[0], device):
                return {"encoder_hidden_states": self.encoders[0](ids)[0].float()}
        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.encoders):
            with visiting(encoder, device):
                out = encoder(self._ids(tokenizer, prompts, device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]  # the last encoder's projected pooled embedding (CLIPTextModelWithProjection)
        return {"encoder_hidden_states": torch.cat(hidden, dim=-1).float(), "text_embeds": pooled.float()}


@contextmanager
def quiet() -> Iterator[None]:
    """Silence diffusers/transformers progress bars and dtype-cast notices while loading or saving."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    saved = [(m, m.get_verbosity(), m.is_progress_bar_enabled()) for m in (dlog, tlog)]
    for m, _, _ in saved:
        m.set_verbosity_error()
        m.disable_progress_bar()
    try:
        yield
    finally:
        for m, level, bars in saved:
            m.set_verbosity(level)
            if bars:
                m.enable_progress_bar()
