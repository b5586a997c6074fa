"""The text-to-motion adapter: MDM and MLD (released or tiny) behind genpref's Adapter protocol.

Model space (what the core noises and predicts):
- MDM: x0 = normalised features [B, 263, 1, T] with T = data.max_motion_length, frame mask [B, 1, 1, T]
  (1 = valid); the network predicts x0 ("sample").
- MLD: x0 = the VAE posterior mean of the normalised features, [B, 1, 256], no mask; the network
  predicts ε. (MLD trained on posterior samples; the mean keeps encoding deterministic, so a pair is
  the same tensor whenever and wherever it is encoded.)
Conditions: cond["text"] = CLIP sentence features [B, D], cond["lengths"] = frames [B]. The
unconditional input of classifier-free guidance is a zero feature for MDM (released `mask_cond`) and
the feature of the empty prompt for MLD (released training drops text to ""). Preference training
never drops conditions: policy and reference are compared on the same text.

Samples outside model space are de-normalised feature arrays [frames, 263] (Mean.npy / Std.npy of the
data, or the ones saved beside a genpref checkpoint). A data path with a scheme (`data.root: <scheme>://...`)
is resolved by the task that registered the scheme (genpref.registry), written on first use.

Sampling: `online.solver` picks the diffusers scheduler (ddpm, ddim, dpmsolver++, euler, ...) built from the
training betas; `PUBLISHED_SAMPLER` holds what the papers evaluate with (MDM: DDPM over all its steps,
guidance 2.5; MLD: DDIM 50 steps with set_alpha_to_one=False, steps_offset=1, guidance 7.5).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from genpref import sampling
from genpref.adapter import Batch
from genpref.config import Config
from genpref.errors import UserError
from genpref.reference import adapters_disabled, eval_mode, frozen_copy, lora_config, unwrap
from genpref.registry import resolve_data
from motion import data as motion_data
from motion.mdm import MDM, follow_float64, guided, load_mdm, mdm_noise_scheduler, released_args, save_mdm
from motion.mld import MLD_DDIM, MldDenoiser, MldVae, load_mld, mld_noise_scheduler, save_mld
from motion.text import SentenceEncoder, load_clip, tiny_clip

log = logging.getLogger("genpref.motion")

KINDS = ("mdm", "mld", "tiny-mdm", "tiny-mld")
MDM_TEXT_TOKENS = 22  # released MDM: 20 words + start/end for HumanML3D
DEFAULT_SECONDS = 6.0  # motion length when no dataset sample lends one (released sample.generate default)

# tiny sizes (model.size) for tests: seconds per step on a CPU
TINY_MDM = {"default": dict(latent_dim=64, ff_size=128, num_layers=2, num_heads=4, clip_dim=32)}
TINY_MLD = {
    "default": dict(
        vae=dict(latent_dim=(1, 32), ff_size=64, num_layers=3, num_heads=4),
        denoiser=dict(latent_dim=(1, 32), ff_size=64, num_layers=3, num_heads=4, text_encoded_dim=48),
    )
}
TINY_DIFFUSION_STEPS = 100  # tiny MDM: cosine schedule over 100 steps

# default LoRA targets when the config keeps the image defaults (to_q, ...), which motion models lack
MOTION_LORA_TARGETS = {"mdm": ["self_attn", "linear1", "linear2", "embed_text"], "mld": ["self_attn", "linear1", "linear2", "emb_proj.1"]}
IMAGE_LORA_DEFAULT = ["to_q", "to_k", "to_v", "to_out.0"]

# the published samplers, for evaluation: (solver, steps or None = all training steps, guidance)
PUBLISHED_SAMPLER = {"mdm": ("ddpm", None, 2.5), "mld": ("ddim", 50, 7.5)}


# ---------------------------------------------------------------------------------------------- codecs


class FrameCodec:
    """MDM: normalised features [B, T, F] <-> x0 [B, F, 1, T_max] with frame mask [B, 1, 1, T_max]."""

    def __init__(self, max_frames: int):
        self.max_frames = max_frames

    def mask(self, lengths: Tensor) -> Tensor:
        return motion_data_mask(lengths, self.max_frames)[:, None, None, :]  # [B, 1, 1, T]

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return feats.permute(0, 2, 1)[:, :, None, :], self.mask(lengths)  # [B, F, 1, T]

    def noise_shape(self, batch: Batch, features: int) -> tuple[int, ...]:
        return (len(batch), features, 1, self.max_frames)

    def decode(self, x0: Tensor, lengths: Tensor) -> Tensor:
        return x0[:, :, 0, :].permute(0, 2, 1)  # [B, T, F]


class LatentCodec:
    """MLD: normalised features [B, T, F] <-> VAE latent [B, latent_size, D] (posterior mean); no mask."""

    def __init__(self, vae: MldVae, max_frames: int):
        self.vae, self.max_frames = vae, max_frames

    def mask(self, lengths: Tensor) -> None:
        return None

    @torch.no_grad()
    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, None]:
        dtype = next(self.vae.parameters()).dtype
        mu, _ = self.vae.encode(feats.to(dtype), lengths)
        return mu.permute(1, 0, 2).float(), None  # [B, latent_size, D]

    def noise_shape(self, batch: Batch, features: int) -> tuple[int, ...]:
        return (len(batch), self.vae.latent_size, self.vae.latent_dim)

    @torch.no_grad()
    def decode(self, x0: Tensor, lengths: Tensor) -> Tensor:
        dtype = next(self.vae.parameters()).dtype
        return self.vae.decode(x0.permute(1, 0, 2).to(dtype), lengths, self.max_frames).float()  # [B, T, F]


def motion_data_mask(lengths: Tensor, num_frames: int) -> Tensor:
    return torch.arange(num_frames, device=lengths.device)[None, :] < lengths.reshape(-1, 1)


# ---------------------------------------------------------------------------------------------- LoRA


def lora_targets(cfg: Config, family: str) -> list[str]:
    targets = list(cfg.model.lora.targets)
    return MOTION_LORA_TARGETS[family] if targets == IMAGE_LORA_DEFAULT else targets


def add_lora(module: nn.Module, cfg: Config, family: str) -> nn.Module:
    """Inject peft LoRA layers in place; only they stay trainable. Unknown targets end in one clear error."""
    from peft import inject_adapter_in_model

    lora = cfg.model.lora
    targets = lora_targets(cfg, family)
    names = {n for n, _ in module.named_modules() if n}
    for target in targets:
        if not any(n == target or n.endswith("." + target) for n in names):
            linear = sorted({n.split(".")[-1] for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.MultiheadAttention))})
            raise UserError(f"model.lora.targets: no module named {target!r} in the {family.upper()} denoiser; try {linear}")
    module.requires_grad_(False)
    return inject_adapter_in_model(lora_config(lora, targets), module)


def merged_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """Base-model state dict with every LoRA update folded into its weights (released parameter names)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = copy.deepcopy(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns that MHA's out_proj was merged with its parent
        for layer in merged.modules():
            if isinstance(layer, BaseTunerLayer):
                layer.merge()
    return {k.replace("base_layer.", ""): v.detach().cpu() for k, v in merged.state_dict().items() if "lora_" not in k}


def disable_attention_dropout(module: nn.Module) -> None:
    """Attention-weight dropout is a float on nn.MultiheadAttention, not an nn.Dropout module, so the loop's
    train.disable_dropout cannot see it; with it on, e_θ and e_ref would differ even at θ = θ_ref."""
    for m in module.modules():
        if isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0


# ---------------------------------------------------------------------------------------------- adapter


class MotionAdapter:
    """MDM or MLD behind genpref's Adapter protocol (see the module docstring for the model space)."""

    def __init__(
        self,
        cfg: Config,
        device: torch.device,
        weight_dtype: torch.dtype,
        *,
        family: str,
        denoiser: nn.Module,
        noise_scheduler,
        text_encoder: SentenceEncoder,
        codec: FrameCodec | LatentCodec,
        stats: tuple[np.ndarray, np.ndarray] | None,
        features: int,
        save_info: dict[str, Any],
        sampler_overrides: dict | None = None,
    ):
        self.cfg, self.device, self.weight_dtype, self.family = cfg, torch.device(device), weight_dtype, family
        self.noise_scheduler = noise_scheduler
        self.text_encoder = text_encoder.to(self.device)
        self.text_encoder.model.to(weight_dtype)
        self.codec, self.stats, self.features, self.save_info = codec, stats, features, save_info
        self.sampler_overrides = sampler_overrides or {}
        self.solver = cfg.online.solver  # eval code may switch to PUBLISHED_SAMPLER[family][0]
        self.published_sampler = PUBLISHED_SAMPLER[family]
        self.data_report: motion_data.LoadReport | None = None
        denoiser = denoiser.to(self.device)
        if cfg.train.disable_dropout:
            disable_attention_dropout(denoiser)
        self.lora = cfg.model.lora is not None
        self.denoiser = add_lora(denoiser, cfg, family) if self.lora else denoiser
        self._reference = None if self.lora else frozen_copy(denoiser, dtype=weight_dtype)
        self._use_reference = False
        null = torch.zeros(text_encoder.dim) if family == "mdm" else self.text_encoder([""])[0]
        self.null_text = null.to(self.device, torch.float32)
        max_frames = cfg.data.max_motion_length
        self.default_length = max(4, int(min(DEFAULT_SECONDS * motion_data.FPS, max_frames)) // 4 * 4)

    # -- data -----------------------------------------------------------------------------------------

    def _dataset(self) -> motion_data.MotionDataset:
        d = self.cfg.data
        if not d.root:
            raise UserError("data.root is required: a HumanML3D-format directory (new_joint_vecs/, texts/, Mean.npy, Std.npy, splits)")
        ds = motion_data.MotionDataset(
            data_root(self.cfg), d.split, min_length=d.min_motion_length, max_length=d.max_motion_length,
            on_bad_sample=d.on_bad_sample, seed=self.cfg.train.seed, features=self.features, max_items=d.max_items,
            empty_prompt_prob=d.empty_prompt_prob,
        )
        self.data_report = ds.report
        log.info("motion data: %s", ds.report.summary())
        for reason, files in sorted(ds.report.bad.items()):
            log.warning("skipped %d motion files (%s), first: %s", len(files), reason, files[0])
        return ds

    def load_items(self, role: str) -> Sequence[dict]:
        d = self.cfg.data
        if role == "experts":
            return self._dataset()
        if role == "prompts":
            if d.prompts:
                return motion_data.prompts_file(d.prompts)
            return [{"prompt": p} for p in dict.fromkeys(it["prompt"] for it in self._dataset())]
        if role in ("pairs", "ratings"):
            path = d.pairs if role == "pairs" else d.ratings
            key = "data.pairs" if role == "pairs" else "data.ratings"
            if not path:
                raise UserError(f"{key} is required for this objective: a jsonl of motion .npy files")
            path = resolve_data("motion", path, role, self.cfg, self)  # a synthetic scheme -> its file
            return motion_data.motion_jsonl(path, role, self.features, d.on_bad_sample, key)
        raise UserError(f"the motion adapter has no data for role {role!r}")

    def _stats(self) -> tuple[np.ndarray, np.ndarray]:
        if self.stats is None:
            raise UserError("motion statistics missing: set data.root (its Mean.npy / Std.npy normalise the model's inputs)")
        return self.stats

    def _features(self, samples: Sequence[Any]) -> tuple[Tensor, Tensor]:
        """Raw motions -> normalised, padded features [B, T_max, F] and lengths [B] (longer ones truncated)."""
        mean, std = self._stats()
        t_max = self.codec.max_frames
        out = np.zeros((len(samples), t_max, self.features), dtype=np.float32)
        lengths = []
        for i, motion in enumerate(samples):
            m = motion.detach().cpu().numpy() if isinstance(motion, Tensor) else np.asarray(motion)
            if m.ndim != 2 or m.shape[1] != self.features:
                raise UserError(f"motion sample {i}: expected [frames, {self.features}] features, got shape {m.shape}")
            n = min(len(m), t_max)
            out[i, :n] = motion_data.normalize(m[:n], mean, std)
            lengths.append(n)
        return torch.from_numpy(out).to(self.device), torch.tensor(lengths, device=self.device)

    # -- protocol -------------------------------------------------------------------------------------

    def _text(self, prompts: Sequence[str]) -> Tensor:
        """Sentence features [B, D]; the empty prompt "" is the unconditional input (zeros for MDM)."""
        text = self.text_encoder(prompts)
        empty = torch.tensor([p == "" for p in prompts], device=text.device)
        return torch.where(empty[:, None], self.null_text.to(text), text)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.denoiser.parameters() if p.requires_grad]

    def encode(self, samples: Sequence[Any], prompts: Sequence[str]) -> Batch:
        feats, lengths = self._features(samples)
        x0, mask = self.codec.encode(feats, lengths)
        return Batch(x0, {"text": self._text(prompts), "lengths": lengths}, mask, list(prompts))

    def encode_prompts(self, prompts: Sequence[str], like: Batch | None = None) -> Batch:
        if like is not None:
            if len(like) != len(prompts):
                raise ValueError(f"encode_prompts: {len(prompts)} prompts but `like` holds {len(like)} samples")
            lengths = like.cond["lengths"].to(self.device)
        else:
            lengths = torch.full((len(prompts),), self.default_length, device=self.device)
        return Batch(None, {"text": self._text(prompts), "lengths": lengths}, self.codec.mask(lengths), list(prompts))

    def _run(self, module: nn.Module, x_t: Tensor, t: Tensor, batch: Batch, guidance: float = 1.0) -> Tensor:
        dtype = next(module.parameters()).dtype
        text = batch.cond["text"].to(self.device, dtype)
        out = guided(module, x_t.to(dtype), t.to(self.device), text, self.null_text.to(dtype), batch.mask, guidance)
        return out.float()

    def predict(self, x_t: Tensor, t: Tensor, batch: Batch, guidance: float = 1.0) -> Tensor:
        module = self._reference if self._use_reference else self.denoiser
        return self._run(module, x_t, t, batch, guidance)

    def use_reference(self, module: nn.Module) -> None:
        self._reference = module  # replaces the frozen copy (full fine-tuning) or the LoRA-off base

    @contextmanager
    def reference(self) -> Iterator[None]:
        """LoRA off (and eval mode) on the policy itself, or the frozen copy (or model.reference's network),
        for the block's duration."""
        if self.lora and self._reference is None:
            with adapters_disabled(self.denoiser), eval_mode(self.denoiser):
                yield
            return
        self._use_reference = True
        try:
            yield
        finally:
            self._use_reference = False

    def make_solver(self, name: str):
        """A fresh sampler scheduler of that name on this model's training schedule, with the model's
        released sampler settings (MLD's DDIM set_alpha_to_one=False, steps_offset=1) and, for MDM, its
        float64 schedule constants."""
        return follow_float64(self.noise_scheduler, sampling.make_solver(name, self.noise_scheduler.config, self.sampler_overrides))

    @torch.no_grad()
    def generate(
        self,
        batch: Batch,
        *,
        generator: torch.Generator,
        num_steps: int,
        guidance: float = 1.0,
        start_t: int | None = None,
        timestep_jitter: bool = False,
        callback=None,
        solver: str | None = None,
        eta: float | None = None,
        on_transition=None,
    ) -> Tensor:
        """Sample x0 with the current weights in eval mode through genpref's sampling loop with the configured
        solver, or `solver` (also under DiffusionDRO's jitter); noise comes from `generator` (on the CPU). eta /
        on_transition: stochastic DDIM with every transition's log-prob, averaged over valid frames."""
        batch = batch.to(self.device)
        shape = self.codec.noise_shape(batch, self.features)
        noise = torch.randn(shape, generator=generator).to(self.device)
        module = self._reference if self._use_reference else self.denoiser
        model_fn = lambda x, t: self._run(module, x, t, batch, guidance)
        if start_t is not None and batch.x0 is None:
            raise UserError("online.reset_t needs dataset samples to start from (the batch has no x0)")
        config = self.noise_scheduler.config
        timesteps = None
        if timestep_jitter:  # DiffusionDRO's rollouts: per-trajectory timesteps on the configured solver
            offsets = sampling.random_offsets(config.num_train_timesteps, num_steps, shape[0], generator)
            timesteps = sampling.jittered_timesteps(config.num_train_timesteps, num_steps, offsets)
        tracks = sampling.plan(lambda: self.make_solver(solver or self.solver), num_steps, shape[0], self.device, timesteps=timesteps, start_t=start_t)
        with eval_mode(module):
            return sampling.sample(model_fn, tracks, noise, generator=generator, x0=batch.x0 if start_t is not None else None,
                                   eta=eta, mask=batch.mask,
                                   callback=callback, on_transition=on_transition)

    def decode(self, x0: Tensor, batch: Batch) -> list[np.ndarray]:
        mean, std = self._stats()
        lengths = batch.cond["lengths"].to(x0.device)
        feats = self.codec.decode(x0.float(), lengths).cpu().numpy()
        return [motion_data.denormalize(f[: int(n)], mean, std).astype(np.float32) for f, n in zip(feats, lengths.tolist())]

    def save_final(self, out_dir: str) -> None:
        """MDM: model.pt + args.json (released layout); MLD: model.ckpt (Lightning layout). Both with the
        Mean.npy / Std.npy that normalise their inputs, so the directory loads on its own."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        module = unwrap(self.denoiser)
        state = merged_state_dict(module) if self.lora else {k: v.detach().cpu() for k, v in module.state_dict().items()}
        if self.family == "mdm":
            model = copy.deepcopy(self.save_info["template"])
            model.load_state_dict(state)
            save_mdm(model, out, self.save_info["args"])
        else:
            denoiser = copy.deepcopy(self.save_info["template"])
            denoiser.load_state_dict(state)
            save_mld(self.codec.vae, denoiser, out / "model.ckpt", self.save_info.get("base"), self.save_info["meta"])
        if self.stats is not None:
            np.save(out / "Mean.npy", self.stats[0])
            np.save(out / "Std.npy", self.stats[1])
        if self.cfg.model.text_encoder and Path(self.cfg.model.text_encoder).is_dir():
            (out / "text_encoder.txt").write_text(str(Path(self.cfg.model.text_encoder).resolve()) + "\n")

    def save_samples(self, samples: list[Any], prompts: Sequence[str], out_dir: str, tag: str) -> list[str]:
        """Per sample: features (.npy), joint positions recovered from them (_joints.npy) and a stick-figure
        GIF; plus the prompts, one per line."""
        from motion.draw import animate
        from motion.skeleton import recover_from_ric

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, (motion, prompt) in enumerate(zip(samples, prompts)):
            stem = out / f"{tag}_{i:02d}"
            joints = recover_from_ric(np.asarray(motion, dtype=np.float32))
            np.save(f"{stem}.npy", motion)
            np.save(f"{stem}_joints.npy", joints)
            animate(joints, f"{stem}.gif", title=prompt)
            paths += [f"{stem}.npy", f"{stem}_joints.npy", f"{stem}.gif"]
        (out / f"{tag}_prompts.txt").write_text("\n".join(prompts) + "\n")
        return paths


# ---------------------------------------------------------------------------------------------- building


def data_root(cfg: Config) -> Path | None:
    """data.root; a synthetic scheme (`<scheme>://...`) is resolved by the task that registered it."""
    root = resolve_data("motion", cfg.data.root, "root", cfg)
    return Path(root) if root else None


def _find_stats(cfg: Config, features: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean/Std of data.root, else the ones saved beside the checkpoint (a genpref final/ directory)."""
    if cfg.data.root:
        return motion_data.read_stats(data_root(cfg), features)
    if cfg.model.path and (Path(cfg.model.path).parent / "Mean.npy").is_file():
        return motion_data.read_stats(Path(cfg.model.path).parent, features)
    return None


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _text_encoder(cfg: Config, tiny: bool, dim: int, max_length: int | None) -> SentenceEncoder:
    enc = tiny_clip(dim, max_length or MDM_TEXT_TOKENS) if tiny else load_clip(cfg.model.text_encoder, max_length)
    if enc.dim != dim:
        raise UserError(f"model.text_encoder gives {enc.dim}-d sentence features but the model expects {dim}-d "
                        f"(MDM uses CLIP ViT-B/32: 512, MLD uses CLIP ViT-L/14: 768)")
    return enc


def _check_prediction_type(cfg: Config, scheduler) -> None:
    want = cfg.model.prediction_type
    if want and want != scheduler.config.prediction_type:
        raise UserError(f"model.prediction_type={want!r}: this model predicts {scheduler.config.prediction_type!r}")


def _build_mdm(cfg: Config, device, weight_dtype) -> MotionAdapter:
    tiny = cfg.model.kind == "tiny-mdm"
    if cfg.model.path:
        model, args = load_mdm(cfg.model.path, cfg.model.use_avg)
    elif tiny:
        size = TINY_MDM.get(cfg.model.size)
        if size is None:
            raise UserError(f"model.size: {cfg.model.size!r} is not a tiny size; valid: {sorted(TINY_MDM)}")
        with _seeded(cfg.train.seed):
            model = MDM(**size, mask_frames=True)
        args = released_args(model, TINY_DIFFUSION_STEPS)
    else:
        raise UserError("model.path is required for model.kind=mdm: a released MDM checkpoint (.pt) with its args.json beside it")
    model.train_cond_drop = False  # preference objectives compare policy and reference on the same text
    scheduler = mdm_noise_scheduler(args)
    _check_prediction_type(cfg, scheduler)
    features = model.njoints * model.nfeats
    return MotionAdapter(
        cfg, device, weight_dtype, family="mdm", denoiser=model, noise_scheduler=scheduler,
        text_encoder=_text_encoder(cfg, tiny, model.clip_dim, MDM_TEXT_TOKENS),
        codec=FrameCodec(cfg.data.max_motion_length), stats=_find_stats(cfg, features), features=features,
        save_info={"template": copy.deepcopy(model).cpu(), "args": {**args, "genpref_text_encoder": "tiny" if tiny else "clip"}},
    )


def _build_mld(cfg: Config, device, weight_dtype) -> MotionAdapter:
    tiny = cfg.model.kind == "tiny-mld"
    base = None
    if cfg.model.path:
        vae, denoiser, base = load_mld(cfg.model.path, cfg.model.vae_path)
    elif tiny:
        size = TINY_MLD.get(cfg.model.size)
        if size is None:
            raise UserError(f"model.size: {cfg.model.size!r} is not a tiny size; valid: {sorted(TINY_MLD)}")
        with _seeded(cfg.train.seed):
            vae, denoiser = MldVae(**size["vae"]), MldDenoiser(**size["denoiser"])
    else:
        raise UserError("model.path is required for model.kind=mld: a released MLD checkpoint (.ckpt)")
    vae = vae.to(device, weight_dtype).eval().requires_grad_(False)
    scheduler = mld_noise_scheduler()
    _check_prediction_type(cfg, scheduler)
    text = _text_encoder(cfg, tiny, denoiser.text_encoded_dim, None)
    meta = {"text_encoder": "tiny" if tiny else "clip"}
    return MotionAdapter(
        cfg, device, weight_dtype, family="mld", denoiser=denoiser, noise_scheduler=scheduler, text_encoder=text,
        codec=LatentCodec(vae, cfg.data.max_motion_length), stats=_find_stats(cfg, vae.nfeats), features=vae.nfeats,
        save_info={"template": copy.deepcopy(denoiser).cpu(), "base": base, "meta": meta}, sampler_overrides=MLD_DDIM,
    )


def build_adapter(cfg: Config, device: torch.device, weight_dtype: torch.dtype) -> MotionAdapter:
    """genpref's entry point: `model.kind` mdm | mld | tiny-mdm | tiny-mld -> a MotionAdapter."""
    kind = cfg.model.kind
    if kind in ("mdm", "tiny-mdm"):
        return _build_mdm(cfg, device, weight_dtype)
    if kind in ("mld", "tiny-mld"):
        return _build_mld(cfg, device, weight_dtype)
    raise UserError(f"model.kind={kind!r} is not a motion model; valid: {', '.join(KINDS)}")
