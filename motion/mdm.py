"""MDM, the Motion Diffusion Model (Tevet et al. 2023), with the module names of the released checkpoints.

Architecture of GuyTevet/motion-diffusion-model `model/mdm.py` (arch "trans_enc", text condition): frames
[B, 263, 1, T] are embedded by `input_process.poseEmbedding`, a condition token (time embedding + projected
CLIP sentence feature) is prepended, sinusoidal positions are added, an 8-layer post-norm transformer
encoder (512 wide, 4 heads, feed-forward 1024, GELU, dropout 0.1) runs over [cond, frames], and
`output_process.poseFinal` maps the frame tokens back to features. The network predicts x0. Classifier-free
guidance zeroes the CLIP feature (the released `mask_cond`), so the unconditional output is
model(x, t, zeros).

`MDM()` has exactly the released parameter and buffer names and shapes (`sequence_pos_encoder.pe` and its
alias `embed_timestep.sequence_pos_encoder.pe` included, no `clip_model.*`). `load_mdm` reads a released
`.pt` (a flat state dict or {'model', 'model_avg'}) with the `args.json` beside it; `save_mdm` writes the
same layout, so the released `sample.generate` / `eval_humanml` load what genpref trains.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from genpref.errors import UserError
from genpref.safe_load import load_weights

HUMANML_FEATURES = {"humanml": 263, "kit": 251}  # args.json "dataset" -> feature width
POS_KEYS = ("sequence_pos_encoder.pe", "embed_timestep.sequence_pos_encoder.pe")  # fixed sinusoids


def sinusoid_table(max_len: int, dim: int) -> Tensor:
    """The transformer positional table [max_len, 1, dim]: sin on even, cos on odd channels."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(max_len, dim)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq)
    return pe[:, None, :]


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.register_buffer("pe", sinusoid_table(max_len, d_model))

    def forward(self, x: Tensor) -> Tensor:  # x [S, B, D]
        return self.dropout(x + self.pe[: x.shape[0]])


class TimestepEmbedder(nn.Module):
    """Integer timestep -> sinusoid row of the shared positional table -> Linear, SiLU, Linear; [1, B, D]."""

    def __init__(self, latent_dim: int, sequence_pos_encoder: PositionalEncoding):
        super().__init__()
        self.sequence_pos_encoder = sequence_pos_encoder
        self.time_embed = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.SiLU(), nn.Linear(latent_dim, latent_dim))

    def forward(self, timesteps: Tensor) -> Tensor:
        return self.time_embed(self.sequence_pos_encoder.pe[timesteps.long()]).permute(1, 0, 2)


class InputProcess(nn.Module):
    def __init__(self, input_feats: int, latent_dim: int):
        super().__init__()
        self.poseEmbedding = nn.Linear(input_feats, latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        b, j, f, t = x.shape
        return self.poseEmbedding(x.permute(3, 0, 1, 2).reshape(t, b, j * f))  # [T, B, D]


class OutputProcess(nn.Module):
    def __init__(self, input_feats: int, latent_dim: int, njoints: int, nfeats: int):
        super().__init__()
        self.njoints, self.nfeats = njoints, nfeats
        self.poseFinal = nn.Linear(latent_dim, input_feats)

    def forward(self, h: Tensor) -> Tensor:
        t, b, _ = h.shape
        return self.poseFinal(h).reshape(t, b, self.njoints, self.nfeats).permute(1, 2, 3, 0)  # [B, J, F, T]


class MDM(nn.Module):
    """The released transformer-encoder MDM for HumanML3D-style features (x0 prediction, text condition).

    forward(x [B, J, F, T], timesteps [B] ints, text_embed [B, clip_dim], mask [B, 1, 1, T] bool or None)
    -> x0 prediction [B, J, F, T]. Padded frames are hidden from attention only when `mask_frames` is set
    (the released 50-step models); the original 1000-step models were trained attending to them.
    During training a fraction `cond_mask_prob` of conditions is zeroed (classifier-free training), as
    released, unless `train_cond_drop` is switched off (preference fine-tuning keeps every condition).
    """

    def __init__(
        self,
        njoints: int = 263,
        nfeats: int = 1,
        latent_dim: int = 512,
        ff_size: int = 1024,
        num_layers: int = 8,
        num_heads: int = 4,
        dropout: float = 0.1,
        activation: str = "gelu",
        clip_dim: int = 512,
        cond_mask_prob: float = 0.1,
        mask_frames: bool = False,
        pos_embed_max_len: int = 5000,
    ):
        super().__init__()
        self.njoints, self.nfeats, self.latent_dim, self.clip_dim = njoints, nfeats, latent_dim, clip_dim
        self.cond_mask_prob, self.mask_frames = cond_mask_prob, mask_frames
        self.train_cond_drop = True
        input_feats = njoints * nfeats
        self.input_process = InputProcess(input_feats, latent_dim)
        self.sequence_pos_encoder = PositionalEncoding(latent_dim, dropout, max_len=pos_embed_max_len)
        layer = nn.TransformerEncoderLayer(latent_dim, num_heads, ff_size, dropout, activation=activation)
        self.seqTransEncoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.embed_timestep = TimestepEmbedder(latent_dim, self.sequence_pos_encoder)
        self.embed_text = nn.Linear(clip_dim, latent_dim)
        self.output_process = OutputProcess(input_feats, latent_dim, njoints, nfeats)

    def mask_cond(self, text_embed: Tensor) -> Tensor:
        """Classifier-free training: zero each condition with probability cond_mask_prob (training only)."""
        if not (self.training and self.train_cond_drop and self.cond_mask_prob > 0):
            return text_embed
        keep = torch.bernoulli(torch.full((text_embed.shape[0], 1), 1.0 - self.cond_mask_prob, device=text_embed.device))
        return text_embed * keep.to(text_embed.dtype)

    def forward(self, x: Tensor, timesteps: Tensor, text_embed: Tensor, mask: Tensor | None = None) -> Tensor:
        b = x.shape[0]
        timesteps = timesteps.reshape(-1).expand(b) if timesteps.numel() == 1 else timesteps
        emb = self.embed_timestep(timesteps) + self.embed_text(self.mask_cond(text_embed))[None]  # [1, B, D]
        xseq = self.sequence_pos_encoder(torch.cat([emb, self.input_process(x)], dim=0))  # [T+1, B, D]
        padding = None
        if self.mask_frames and mask is not None:
            frames_padding = ~mask.reshape(b, -1)[:, : x.shape[-1]].bool()
            padding = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x.device), frames_padding], dim=1)
        h = self.seqTransEncoder(xseq, src_key_padding_mask=padding)[1:]  # [T, B, D]
        return self.output_process(h)


def guided(model: nn.Module, x: Tensor, t: Tensor, text_embed: Tensor, null_embed: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """Classifier-free guidance, one batched pass: out_uncond + scale·(out_cond − out_uncond)."""
    if scale == 1.0:
        return model(x, t, text_embed, mask)
    b = x.shape[0]
    null = null_embed.to(text_embed).expand_as(text_embed)
    cat_mask = None if mask is None else torch.cat([mask, mask])
    out = model(torch.cat([x, x]), torch.cat([t.reshape(-1).expand(b)] * 2), torch.cat([text_embed, null]), cat_mask)
    cond, uncond = out[:b], out[b:]
    return uncond + scale * (cond - uncond)


# ---------------------------------------------------------------------------------------------- schedule


def float64_betas(config) -> np.ndarray:
    """The betas of a diffusers config ("squaredcos_cap_v2" or "linear") computed in float64, as
    guided-diffusion's `get_named_beta_schedule` / `betas_for_alpha_bar` do with numpy."""
    steps = int(config["num_train_timesteps"])
    if config["beta_schedule"] == "squaredcos_cap_v2":
        abar = np.cos((np.arange(steps + 1, dtype=np.float64) / steps + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.minimum(1.0 - abar[1:] / abar[:-1], 0.999)
    if config["beta_schedule"] == "linear":
        return np.linspace(config["beta_start"], config["beta_end"], steps, dtype=np.float64)
    raise UserError(f"float64 noise constants: beta_schedule {config['beta_schedule']!r} is not supported")


def with_float64_constants(scheduler):  # DDPMScheduler or DDIMScheduler
    """Replace a diffusers scheduler's β, α and ᾱ (float32 there) by float64 tensors, as MDM keeps them
    (guided-diffusion computes every schedule array in float64 and casts only the gathered coefficient):
    at t = 1 of 1000 float32 ᾱ puts √(1−ᾱ) off by ~1e-3 relative. Steps then compute their coefficients in
    float64 and apply them to float32 samples. `follow_float64` gives samplers made from its config the same."""
    betas = torch.from_numpy(float64_betas(scheduler.config))
    scheduler.betas, scheduler.alphas = betas, 1.0 - betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    if hasattr(scheduler, "final_alpha_cumprod"):  # DDIM
        one = torch.tensor(1.0, dtype=torch.float64)
        scheduler.final_alpha_cumprod = one if scheduler.config.get("set_alpha_to_one", True) else scheduler.alphas_cumprod[0]
    scheduler.add_noise = _float64_add_noise(scheduler)
    scheduler.float64_constants = True
    return scheduler


def follow_float64(train_scheduler, solver):
    """A sampler built from `train_scheduler`'s config, with its float64 constants when it has them (DDPM
    and DDIM samplers; other solvers derive their own tables at construction and keep them)."""
    if getattr(train_scheduler, "float64_constants", False) and type(solver).__name__ in ("DDPMScheduler", "DDIMScheduler"):
        return with_float64_constants(solver)
    return solver


def _float64_add_noise(scheduler):
    """add_noise with √ᾱ and √(1−ᾱ) taken in float64 (on the CPU: some devices have no float64) and cast
    to the samples' dtype only then; diffusers casts ᾱ first, which loses 1−ᾱ near t = 0."""

    def add_noise(original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        abar = scheduler.alphas_cumprod[timesteps.cpu().long()].reshape(-1, *([1] * (original_samples.dim() - 1)))
        scale = abar.sqrt().to(original_samples.device, original_samples.dtype)
        sigma = (1.0 - abar).sqrt().to(original_samples.device, original_samples.dtype)
        return scale * original_samples + sigma * noise

    return add_noise


def mdm_noise_scheduler(args: dict[str, Any]):
    """The training scheduler of a released MDM: x0 prediction, `diffusion_steps` steps of the named betas,
    with MDM's float64 schedule constants (`with_float64_constants`).

    MDM's cosine betas (guided-diffusion `betas_for_alpha_bar` with ᾱ(t) = cos²((t + 0.008)/1.008 · π/2),
    capped at 0.999) are diffusers' "squaredcos_cap_v2" for any step count: the 50-step models use the
    same formula over 50 steps. "linear" is 1e-4..0.02 scaled by 1000/steps. sigma_small = fixed_small.
    """
    from diffusers import DDPMScheduler

    steps = int(args.get("diffusion_steps", 1000))
    schedule = args.get("noise_schedule", "cosine")
    common = dict(num_train_timesteps=steps, prediction_type="sample", clip_sample=False, variance_type="fixed_small")
    if schedule == "cosine":
        scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", **common)
    elif schedule == "linear":
        scale = 1000.0 / steps
        scheduler = DDPMScheduler(beta_schedule="linear", beta_start=scale * 1e-4, beta_end=scale * 0.02, **common)
    else:
        raise UserError(f"args.json: noise_schedule {schedule!r} is not supported (cosine | linear)")
    return with_float64_constants(scheduler)


# ---------------------------------------------------------------------------------------------- checkpoints

# args.json keys that change the architecture and that this port does not implement, with their neutral value
UNSUPPORTED = {"arch": "trans_enc", "emb_trans_dec": False, "text_encoder_type": "clip", "multi_target_cond": False,
               "pred_len": 0, "context_len": 0, "emb_policy": "add", "unconstrained": False}


def mdm_kwargs(args: dict[str, Any], where: str) -> dict[str, Any]:
    """MDM(...) keyword arguments from a released args.json (plus genpref's optional size keys)."""
    for key, neutral in UNSUPPORTED.items():
        if args.get(key, neutral) not in (neutral, None):
            raise UserError(f"{where}: {key}={args[key]!r} is not supported (genpref ports MDM with {key}={neutral!r})")
    dataset = args.get("dataset", "humanml")
    if "njoints" not in args and dataset not in HUMANML_FEATURES:
        raise UserError(f"{where}: dataset {dataset!r} is not a text-to-motion dataset (humanml | kit)")
    return dict(
        njoints=int(args.get("njoints", HUMANML_FEATURES.get(dataset, 263))),
        latent_dim=int(args.get("latent_dim", 512)),
        ff_size=int(args.get("ff_size", 1024)),  # released code hard-codes 1024 and 4 heads
        num_layers=int(args.get("layers", 8)),
        num_heads=int(args.get("num_heads", 4)),
        clip_dim=int(args.get("clip_dim", 512)),
        cond_mask_prob=float(args.get("cond_mask_prob", 0.1)),
        mask_frames=bool(args.get("mask_frames", False)),
        pos_embed_max_len=int(args.get("pos_embed_max_len", 5000)),
    )


def _load_torch(path: Path) -> Any:
    return load_weights(path, "MDM checkpoint")


def pick_state_dict(ckpt: Any, use_avg: bool, path: Path) -> dict[str, Tensor]:
    """A flat state dict, or 'model_avg' (use_avg) / 'model' of a {'model', 'model_avg'} checkpoint."""
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: expected a state dict, got {type(ckpt).__name__}")
    if "model" in ckpt and isinstance(ckpt["model"], dict):
        if use_avg and "model_avg" in ckpt:
            return ckpt["model_avg"]
        if use_avg:
            warnings.warn(f"{path}: model.use_avg is set but the file has no 'model_avg'; loading 'model'", stacklevel=2)
        return ckpt["model"]
    return ckpt


def load_state_strict(module: nn.Module, state: dict[str, Tensor], path: Path, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load with one clear error naming the first unexpected, missing or mis-shaped key."""
    own = module.state_dict()
    for key, value in state.items():
        if key.startswith(ignore_prefixes):
            continue
        if key not in own:
            raise UserError(f"{path}: unexpected key '{key}' (not a parameter of {type(module).__name__})")
        if tuple(value.shape) != tuple(own[key].shape):
            raise UserError(f"{path}: '{key}' has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}")
    missing = [k for k in own if k not in state]
    if missing:
        raise UserError(f"{path}: missing key '{missing[0]}' ({len(missing)} missing in all)")
    module.load_state_dict({k: v for k, v in state.items() if not k.startswith(ignore_prefixes)})


def load_mdm(path: str | Path, use_avg: bool = False) -> tuple[MDM, dict[str, Any]]:
    """A released (or genpref-written) MDM checkpoint and its args.json -> (model, args)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model.path: MDM checkpoint not found: {path}")
    args_path = path.parent / "args.json"
    if not args_path.is_file():
        raise UserError(f"{args_path} not found: an MDM checkpoint needs the args.json written beside it by training")
    try:
        args = json.loads(args_path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{args_path}: invalid JSON ({err.msg}, line {err.lineno})") from None
    model = MDM(**mdm_kwargs(args, str(args_path)))
    state = dict(pick_state_dict(_load_torch(path), use_avg, path))
    for key in POS_KEYS:  # fixed sinusoids; older models stored a different length (as released loading)
        state.pop(key, None)
    state.update({k: v for k, v in model.state_dict().items() if k in POS_KEYS})
    load_state_strict(model, state, path, ignore_prefixes=("clip_model.",))
    return model, args


def save_mdm(model: MDM, out_dir: str | Path, args: dict[str, Any], with_avg: bool = False, name: str = "model.pt") -> Path:
    """Write `name` + args.json in the released layout (flat, or {'model', 'model_avg'} when with_avg)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"model": state, "model_avg": state} if with_avg else state, out_dir / name)
    (out_dir / "args.json").write_text(json.dumps(args, indent=4, sort_keys=True))
    return out_dir / name


def released_args(model: MDM, diffusion_steps: int, base: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """args.json for `model`: the base run's args updated with this architecture (readable by released code)."""
    args = dict(base or {})
    args.update(
        arch="trans_enc", dataset=args.get("dataset", "humanml"), latent_dim=model.latent_dim,
        layers=len(model.seqTransEncoder.layers), cond_mask_prob=model.cond_mask_prob, mask_frames=model.mask_frames,
        diffusion_steps=diffusion_steps, noise_schedule=args.get("noise_schedule", "cosine"),
        text_encoder_type="clip", pos_embed_max_len=model.sequence_pos_encoder.pe.shape[0],
        ff_size=model.seqTransEncoder.layers[0].linear1.out_features,
        num_heads=model.seqTransEncoder.layers[0].self_attn.num_heads, clip_dim=model.clip_dim, njoints=model.njoints,
    )
    args.update(extra)
    return args
