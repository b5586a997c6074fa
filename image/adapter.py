"""The text-to-image adapter: Stable Diffusion 1.5 / SDXL / tiny UNets behind `genpref.adapter.Adapter`.

`build_adapter(cfg, device, weight_dtype)` is what `genpref/build.py` calls for model.kind sd15, sdxl,
tiny-sd and tiny-sdxl. The adapter owns the model's modules, turns image data into scaled VAE latents
and prompts into CLIP conditioning (both through the content-keyed cache), predicts with the policy or
the reference, samples with any diffusers scheduler and writes LoRA / pipeline weights users load.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from genpref import sampling
from genpref.adapter import Batch, StepCallback
from genpref.config import Config
from genpref.errors import UserError
from genpref.reference import LoraToggle, eval_mode, frozen_copy, lora_config, unwrap
from genpref.registry import resolve_data
from image import data as image_data
from image.cache import CachedEncoder, TensorStore
from image.data import grid
from image.export import LORA_WEIGHTS
from image.models import (
    ClipPromptEncoder,
    Components,
    IdentityCodec,
    VaeCodec,
    load_components,
    make_pipeline,
    quiet,
)

ATTENTION = ("sdpa", "xformers")


def set_attention(unet: nn.Module, attention: str) -> None:
    """SDPA (PyTorch scaled_dot_product_attention, the default) or xformers when installed."""
    if attention == "sdpa":
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())
    elif attention == "xformers":
        from diffusers.utils import is_xformers_available

        if not is_xformers_available():
            raise UserError("model.attention: xformers is not installed (pip install 'genpref[xformers]'); "
                            "use model.attention=sdpa, which is as fast on PyTorch 2")
        unet.enable_xformers_memory_efficient_attention()
    else:
        raise UserError(f"model.attention: {attention!r}; valid: {', '.join(ATTENTION)}")


def add_lora(unet: nn.Module, lora: Any, weight_dtype: torch.dtype) -> None:
    """peft LoRA on the frozen UNet, as diffusers' training scripts do; LoRA weights stay float32."""
    from diffusers.training_utils import cast_training_params

    try:
        unet.add_adapter(lora_config(lora))
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise UserError(f"model.lora.targets: {err}") from None
    if weight_dtype != torch.float32:
        cast_training_params(unet, dtype=torch.float32)


class ImageAdapter:
    """Stable Diffusion behind the Adapter protocol. Plain class; see genpref/adapter.py for the contract.

    Batch.cond keys: "encoder_hidden_states" [B, 77, D]; SDXL adds "text_embeds" [B, P] (pooled) and
    "time_ids" [B, 6] = (original_h, original_w, crop_top, crop_left, target_h, target_w).
    """

    def __init__(self, components: Components, cfg: Config, device: torch.device, weight_dtype: torch.dtype):
        self.cfg, self.device, self.weight_dtype = cfg, torch.device(device), weight_dtype
        self.components, self.family = components, components.family
        self.resolution = cfg.data.resolution
        mc = cfg.model
        unet = components.unet
        unet.requires_grad_(False)
        set_attention(unet, mc.attention)
        self.is_lora = mc.lora is not None
        if self.is_lora:
            unet.to(self.device, dtype=weight_dtype)
            add_lora(unet, mc.lora, weight_dtype)
            self.reference_unet = None
            self.policy_dtype = weight_dtype
        else:
            unet.to(self.device, dtype=torch.float32).requires_grad_(True)
            self.reference_unet = frozen_copy(unet, dtype=weight_dtype)
            self.policy_dtype = torch.float32  # trained weights in fp32; accelerate's autocast runs them mixed
        if mc.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        self.denoiser: nn.Module = unet
        self.noise_scheduler = components.scheduler
        self._in_reference = False
        self._lora_toggle: LoraToggle | None = None

        # VAE and text encoders wait on the CPU and visit an accelerator only for cache misses and decodes.
        self.encoder_home = torch.device("cpu") if self.device.type == "cuda" else self.device
        self.codec = self._codec(components.vae, weight_dtype)
        for encoder in components.text_encoders:
            encoder.to(self.encoder_home, dtype=weight_dtype).requires_grad_(False).eval()
        self.prompt_encoder = components.prompt_encoder or ClipPromptEncoder(
            self.family, components.text_encoders, components.tokenizers, device=self.device)
        cache_dir = cfg.data.cache_dir or str(Path(cfg.train.output_dir) / "cache")
        self.cache = CachedEncoder(TensorStore(cache_dir), self.codec, self.prompt_encoder, self.resolution)
        self.augment = image_data.Augment(
            random_flip=cfg.data.random_flip, random_crop=not cfg.data.center_crop,
            empty_prompt_prob=cfg.data.empty_prompt_prob, seed=cfg.train.seed,
        )
        self._check_resolution()

    def _codec(self, vae: nn.Module | None, weight_dtype: torch.dtype) -> Any:
        if vae is None:
            return IdentityCodec(self.components.unet.config.in_channels)
        # SDXL's original VAE overflows in fp16 (config force_upcast): keep it fp32 as the pipelines do.
        upcast = weight_dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        vae.to(self.encoder_home, dtype=torch.float32 if upcast else weight_dtype).requires_grad_(False).eval()
        return VaeCodec(vae, device=self.device)

    def _check_resolution(self) -> None:
        multiple = self.codec.factor * 2 ** (len(self.components.unet.config.block_out_channels) - 1)
        if self.resolution % multiple:
            raise UserError(f"data.resolution: {self.resolution} must be a multiple of {multiple} for this "
                            "model (VAE downsampling × UNet downsampling)")

    # ------------------------------------------------------------------------------------------ protocol

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in unwrap(self.denoiser).parameters() if p.requires_grad]

    def load_items(self, role: str) -> Sequence[dict]:
        d = self.cfg.data
        common = {"on_bad_sample": self._bad_mode(), "augment": self.augment, "max_items": d.max_items}
        spec = {"pairs": d.pairs, "experts": d.experts, "prompts": d.prompts, "ratings": d.ratings}.get(role)
        if role not in ("pairs", "experts", "prompts", "ratings"):
            raise ValueError(f"load_items: unknown role {role!r}")
        spec = resolve_data("image", spec, role, self.cfg, self)  # a synthetic scheme -> its path
        if role == "pairs" and spec:
            return image_data.read_pairs(spec, ties=d.ties, **common)
        if role == "experts" and spec:
            return image_data.read_experts(spec, **common)
        if role == "ratings" and spec:
            return image_data.read_ratings(spec, **common)
        if role == "prompts":
            if spec:
                return image_data.read_prompts(spec, max_items=d.max_items)
            for other in ("experts", "pairs"):  # prompts of the offline data, once each
                if getattr(d, other):
                    prompts = dict.fromkeys(self.load_items(other).prompts)
                    return [{"prompt": p} for p in prompts]
        raise UserError(f"data.{role} is not set: this recipe needs it (see configs/image/*.yaml)")

    def _bad_mode(self) -> str:
        mode = self.cfg.data.on_bad_sample
        if mode not in image_data.BAD_SAMPLE_MODES:
            raise UserError(f"data.on_bad_sample: {mode!r}; valid: {', '.join(image_data.BAD_SAMPLE_MODES)}")
        return mode

    def encode(self, samples: Sequence[Any], prompts: Sequence[str]) -> Batch:
        if len(samples) != len(prompts):
            raise ValueError(f"encode: {len(samples)} samples but {len(prompts)} prompts")
        x0, micro = self.cache.images(samples)
        cond = self.cache.prompts(list(prompts))
        if self.family == "sdxl":
            target = torch.full((len(samples), 2), float(self.resolution))
            cond["time_ids"] = torch.cat([micro, target], dim=1)  # [B, 6]
        return Batch(x0.to(self.device), {k: v.to(self.device) for k, v in cond.items()}, None, list(prompts))

    def encode_prompts(self, prompts: Sequence[str], like: Batch | None = None) -> Batch:
        cond = self.cache.prompts(list(prompts))
        if self.family == "sdxl":
            r = float(self.resolution)
            cond["time_ids"] = torch.tensor([[r, r, 0.0, 0.0, r, r]]).expand(len(prompts), 6).clone()
        return Batch(None, {k: v.to(self.device) for k, v in cond.items()}, None, list(prompts))

    def predict(self, x_t: Tensor, t: Tensor, batch: Batch, guidance: float = 1.0) -> Tensor:
        if guidance > 1.0:  # classifier-free guidance: the unconditional half beside the conditional one
            uncond = self.unconditional(len(x_t))
            cond = {k: torch.cat([uncond[k].to(self.device), v.to(self.device)]) for k, v in batch.cond.items()}
            out_u, out_c = self.predict(torch.cat([x_t, x_t]), torch.cat([t, t]), Batch(None, cond)).float().chunk(2)
            return out_u + guidance * (out_c - out_u)
        net, dtype = (self.reference_unet, self.weight_dtype) if self._in_reference else (self.denoiser, self.policy_dtype)
        cond = {k: v.to(self.device, dtype) for k, v in batch.cond.items()}
        added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]} if self.family == "sdxl" else None
        return net(x_t.to(self.device, dtype), t.to(self.device), encoder_hidden_states=cond["encoder_hidden_states"],
                   added_cond_kwargs=added, class_labels=cond.get("class_labels")).sample

    def use_reference(self, module: nn.Module) -> None:
        self.reference_unet = module  # replaces the frozen copy (full fine-tuning) or the LoRA-off base

    @contextmanager
    def reference(self) -> Iterator[None]:
        if self.is_lora and self.reference_unet is None:
            if self._lora_toggle is None:  # found once: the layers never change after add_lora
                self._lora_toggle = LoraToggle(unwrap(self.denoiser))
            with self._lora_toggle.disabled():
                yield
            return
        self._in_reference = True
        try:
            yield
        finally:
            self._in_reference = False

    def unconditional(self, n: int) -> dict[str, Tensor]:
        """The CFG negative: SD encodes ""; SDXL uses zeros (its pipeline's force_zeros_for_empty_prompt)."""
        cond = self.encode_prompts([""] * n).cond
        if self.family == "sdxl":
            cond = {k: (v if k == "time_ids" else torch.zeros_like(v)) for k, v in cond.items()}
        return cond

    def make_solver(self, name: str) -> Any:
        """A fresh sampler scheduler of that name on this model's training schedule."""
        return sampling.make_solver(name, self.noise_scheduler.config)

    @torch.no_grad()
    def generate(self, batch: Batch, *, generator: torch.Generator, num_steps: int, guidance: float = 1.0,
                 start_t: int | None = None, callback: StepCallback | None = None,
                 timestep_jitter: bool = False, solver: str | None = None, eta: float | None = None,
                 on_transition: sampling.TransitionCallback | None = None) -> Tensor:
        """Sample latents for batch.cond with the current weights through genpref's sampling loop.

        timestep_jitter: each trajectory gets its own timesteps (t_i + offset_b, offset_b in [0, T//S)),
        DiffusionDRO's buffer_perturb_timesteps. solver: overrides online.solver. eta / on_transition:
        stochastic DDIM with every transition's log-prob (online RL). The callback receives t as [B]."""
        n = len(batch)
        if start_t is not None and batch.x0 is None:
            raise ValueError("generate: start_t needs batch.x0 (the data to noise)")
        name = solver or self.cfg.online.solver
        config = self.noise_scheduler.config
        timesteps = None
        if timestep_jitter:
            offsets = sampling.random_offsets(config.num_train_timesteps, num_steps, n, generator)
            timesteps = sampling.jittered_timesteps(config.num_train_timesteps, num_steps, offsets)
        tracks = sampling.plan(lambda: self.make_solver(name), num_steps, n, self.device,
                               timesteps=timesteps, start_t=start_t)
        side = self.resolution // self.codec.factor
        shape = (n, unwrap(self.denoiser).config.in_channels, side, side)
        conditions = Batch(None, batch.cond)
        predict = lambda x_in, t: self.predict(x_in, t, conditions, guidance).float()
        noise = torch.randn(shape, generator=generator, device=generator.device).to(self.device)
        with eval_mode(unwrap(self.denoiser)):
            return sampling.sample(predict, tracks, noise, generator=generator, x0=batch.x0 if start_t is not None else None, eta=eta,
                                   callback=callback, on_transition=on_transition)

    @torch.no_grad()
    def decode(self, x0: Tensor, batch: Batch | None = None) -> list:
        return image_data.to_pil(self.codec.decode(x0.to(self.device)))

    def save_samples(self, samples: list, prompts: Sequence[str], out_dir: str, tag: str) -> list[str]:
        """`out_dir/<tag>.png`: a grid with one row per run of equal consecutive prompts (one column per
        seed, as the loop orders them), and `<tag>.txt` listing the rows' prompts."""
        rows: list[list] = []
        row_prompts: list[str] = []
        for image, prompt in zip(samples, prompts):
            if not row_prompts or prompt != row_prompts[-1]:
                rows.append([])
                row_prompts.append(prompt)
            rows[-1].append(image)
        cols = max(len(r) for r in rows)
        blank = Image.new("RGB", samples[0].size)
        tiles = [r[c] if c < len(r) else blank for r in rows for c in range(cols)]
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        grid(tiles, len(rows), cols).save(out / f"{tag}.png")
        (out / f"{tag}.txt").write_text("\n".join(row_prompts) + "\n")
        return [str(out / f"{tag}.png"), str(out / f"{tag}.txt")]

    # ------------------------------------------------------------------------------------------ weights

    def lora_state_dict(self) -> dict[str, Tensor]:
        """The LoRA weights in diffusers' format (what `save_lora_weights` writes, keys without "unet.")."""
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        state = get_peft_model_state_dict(unwrap(self.denoiser))
        return convert_state_dict_to_diffusers({k: v.detach().float().cpu() for k, v in state.items()})

    def lora_metadata(self) -> dict:
        return unwrap(self.denoiser).peft_config["default"].to_dict()

    def save_final(self, out_dir: str) -> None:
        """LoRA: `out_dir/pytorch_lora_weights.safetensors` (pipe.load_lora_weights(out_dir) reads it).
        Full fine-tune: a diffusers pipeline directory (from_pretrained(out_dir) reads it)."""
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        if self.is_lora:
            cls = StableDiffusionXLPipeline if self.family == "sdxl" else StableDiffusionPipeline
            with quiet():
                cls.save_lora_weights(out_dir, unet_lora_layers=self.lora_state_dict(), weight_name=LORA_WEIGHTS,
                                      unet_lora_adapter_metadata=self.lora_metadata(), safe_serialization=True)
            return
        c = self.components
        policy = unwrap(self.denoiser)
        if c.save_weights is not None:  # no text encoder or VAE to make a pipeline of: the UNet's own files
            c.save_weights(policy, out_dir)
            return
        pipe = make_pipeline(Components(c.family, policy, c.vae, c.text_encoders, c.tokenizers, c.scheduler, c.source))
        with quiet():
            pipe.save_pretrained(out_dir, safe_serialization=True)

    def load_lora_weights(self, path: str | Path) -> None:
        """Load a saved LoRA (a file, or a directory holding pytorch_lora_weights.safetensors) INTO the
        existing adapter: resuming or sampling must not stack a second adapter on the first."""
        from diffusers.utils import convert_unet_state_dict_to_peft
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        if not self.is_lora:
            raise UserError("model.lora is null (full fine-tuning): there is no LoRA to load weights into")
        path = Path(path)
        file = path / LORA_WEIGHTS if path.is_dir() else path
        if not file.is_file():
            raise UserError(f"LoRA weights not found: {file}")
        try:
            loaded = load_file(str(file))
        except Exception as err:  # SafetensorError: a pickle or another format under the safetensors name
            raise UserError(f"{file}: not a safetensors file ({err}); it is never unpickled") from None
        state = {k.removeprefix("unet."): v for k, v in loaded.items() if k.startswith("unet.")}
        if not state:
            raise UserError(f"{file}: no UNet LoRA weights in it (keys must start with 'unet.')")
        state = convert_unet_state_dict_to_peft(state)
        hint = "model.lora rank/targets differ from the run that saved it?"
        try:
            result = set_peft_model_state_dict(unwrap(self.denoiser), state, adapter_name="default")
        except RuntimeError as err:  # torch: "size mismatch for ..."
            detail = next((ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln), str(err))
            raise UserError(f"{file}: LoRA weights do not fit this model ({hint}): {detail}") from None
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        missing = [k for k in getattr(result, "missing_keys", []) or [] if "lora_" in k]
        if unexpected or missing:
            example = (unexpected or missing)[0]
            raise UserError(f"{file}: {len(unexpected)} unexpected and {len(missing)} missing LoRA weights "
                            f"({hint}), e.g. {example}")

    def pipeline(self, solver: str = "dpmsolver++") -> Any:
        """A diffusers pipeline over the live modules (policy UNet with its LoRA), for users' own sampling."""
        c = self.components
        scheduler = sampling.make_solver(solver, self.noise_scheduler.config)
        return make_pipeline(Components(c.family, unwrap(self.denoiser), c.vae, c.text_encoders, c.tokenizers,
                                        c.scheduler, c.source), scheduler)


def build_adapter(cfg: Config, device: torch.device, weight_dtype: torch.dtype) -> ImageAdapter:
    """model.kind sd15 | sdxl | tiny-sd | tiny-sdxl -> ImageAdapter on `device`; frozen weights in weight_dtype."""
    mc = cfg.model
    tiny_dir = Path(cfg.train.output_dir) / "tiny-model" if mc.kind.startswith("tiny") else None
    with quiet():
        components = load_components(mc.kind, mc.path, size=mc.size, vae_path=mc.vae_path,
                                     prediction_type=mc.prediction_type, tiny_dir=tiny_dir)
        return ImageAdapter(components, cfg, device, weight_dtype)
