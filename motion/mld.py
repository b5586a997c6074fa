"""MLD, Motion Latent Diffusion (Chen et al. 2023): the motion VAE and the latent denoiser, with released names.

Architecture of ChenFengYe/motion-latent-diffusion for HumanML3D (`configs/config_mld_humanml3d.yaml`):
- `MldVae` (`mld_vae.py`, arch "encoder_decoder", PE_TYPE "mld"): frames -> `skel_embedding`; two learned
  distribution tokens (`global_motion_token`, μ and log σ²) are prepended; a skip-connected transformer
  encoder (9 layers: 4 input blocks, a middle block, 4 output blocks joined to their input twins by
  `linear_blocks`) reads [tokens, frames] with learned positions (`query_pos_encoder.pe`, 500 × 256);
  the latent z is one 256-d token. The decoder is the skip-connected transformer *decoder*: zero queries
  + learned positions (`query_pos_decoder.pe`) cross-attend to z; `final_layer` maps back to features and
  padded frames are zeroed.
- `MldDenoiser` (`mld_denoiser.py`, trans_enc with SKIP_CONNECT): tokens [z, time, text] with learned
  positions (`query_pos`; `mem_pos` exists but is unused, as released), the same skip transformer, ε
  prediction for the z token. Time: diffusers' sinusoidal `Timesteps` (768, flip_sin_to_cos, shift 0) and
  `TimestepEmbedding` (linear_1, linear_2); text: CLIP ViT-L/14 sentence feature through `emb_proj`
  (ReLU, Linear 768 -> 256). Classifier-free guidance uses the encoding of the empty prompt "" (MLD
  drops text to "" during training), scale 7.5; sampling is DDIM with 50 steps, η = 0.
The transformer layers are torch's post-norm layers: their parameter names (self_attn, multihead_attn,
linear1/2, norm1/2/3) equal the DETR-style layers of the release, and with no positional query terms
(`pos=None` everywhere in the released forward passes) they compute the same function.

Released Lightning checkpoints keep everything in `state_dict` under `vae.`, `denoiser.`, `text_encoder.`
(and the T2M evaluator's `t2m_*.`) prefixes; `load_mld` reads the first two and infers the sizes from the
shapes. `save_mld` writes the same layout, keeping the base file's other entries so released code loads it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from genpref.errors import UserError
from genpref.safe_load import load_weights
from motion.mdm import load_state_strict

NUM_HEADS = 4  # not recoverable from a state dict; every released MLD uses 4


def lengths_to_mask(lengths: Tensor, num_frames: int) -> Tensor:
    """[B] lengths -> [B, num_frames] bool, True = a valid frame."""
    return torch.arange(num_frames, device=lengths.device)[None, :] < lengths.reshape(-1, 1)


class LearnedPositions(nn.Module):
    """Learned absolute positions added to a [S, B, D] sequence (released `PositionEmbeddingLearned1D`)."""

    def __init__(self, d_model: int, max_len: int = 500):
        super().__init__()
        self.pe = nn.Parameter(torch.empty(max_len, 1, d_model).uniform_())

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pe[: x.shape[0]]


class SkipTransformer(nn.Module):
    """U-shaped transformer stack: input blocks, a middle block, output blocks that each first fuse the
    mirrored input block's activation through a Linear(2D -> D); then a final LayerNorm. With
    `memory` the blocks are decoder layers (self-attention + cross-attention to memory)."""

    def __init__(self, layer: nn.Module, num_layers: int, d_model: int):
        super().__init__()
        if num_layers % 2 != 1:
            raise ValueError("SkipTransformer needs an odd number of layers")
        n = (num_layers - 1) // 2
        self.input_blocks = nn.ModuleList(copy.deepcopy(layer) for _ in range(n))
        self.middle_block = copy.deepcopy(layer)
        self.output_blocks = nn.ModuleList(copy.deepcopy(layer) for _ in range(n))
        self.linear_blocks = nn.ModuleList(nn.Linear(2 * d_model, d_model) for _ in range(n))
        self.norm = nn.LayerNorm(d_model)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    @staticmethod
    def _block(layer: nn.Module, x: Tensor, memory: Tensor | None, padding: Tensor | None) -> Tensor:
        if memory is None:
            return layer(x, src_key_padding_mask=padding)
        return layer(x, memory, tgt_key_padding_mask=padding)

    def forward(self, x: Tensor, memory: Tensor | None = None, padding: Tensor | None = None) -> Tensor:
        skips = []
        for layer in self.input_blocks:
            x = self._block(layer, x, memory, padding)
            skips.append(x)
        x = self._block(self.middle_block, x, memory, padding)
        for layer, fuse in zip(self.output_blocks, self.linear_blocks):
            x = self._block(layer, fuse(torch.cat([x, skips.pop()], dim=-1)), memory, padding)
        return self.norm(x)


def _encoder_layer(d: int, heads: int, ff: int, dropout: float, activation: str, pre_norm: bool) -> nn.Module:
    return nn.TransformerEncoderLayer(d, heads, ff, dropout, activation=activation, norm_first=pre_norm)


def _decoder_layer(d: int, heads: int, ff: int, dropout: float, activation: str, pre_norm: bool) -> nn.Module:
    return nn.TransformerDecoderLayer(d, heads, ff, dropout, activation=activation, norm_first=pre_norm)


class MldVae(nn.Module):
    """Motion VAE: features [B, T, F] + lengths <-> latent tokens [latent_size, B, D]."""

    def __init__(
        self,
        nfeats: int = 263,
        latent_dim: tuple[int, int] = (1, 256),
        ff_size: int = 1024,
        num_layers: int = 9,
        num_heads: int = NUM_HEADS,
        dropout: float = 0.1,
        arch: str = "encoder_decoder",
        normalize_before: bool = False,
        activation: str = "gelu",
        mlp_dist: bool = False,
        max_len: int = 500,
    ):
        super().__init__()
        if arch not in ("encoder_decoder", "all_encoder"):
            raise ValueError(f"MldVae: arch must be encoder_decoder or all_encoder, got {arch!r}")
        self.latent_size, self.latent_dim = int(latent_dim[0]), int(latent_dim[-1])
        self.nfeats, self.arch, self.mlp_dist = nfeats, arch, mlp_dist
        d = self.latent_dim
        layer_args = (d, num_heads, ff_size, dropout, activation, normalize_before)
        self.query_pos_encoder = LearnedPositions(d, max_len)
        self.query_pos_decoder = LearnedPositions(d, max_len)
        self.encoder = SkipTransformer(_encoder_layer(*layer_args), num_layers, d)
        dec_layer = _decoder_layer(*layer_args) if arch == "encoder_decoder" else _encoder_layer(*layer_args)
        self.decoder = SkipTransformer(dec_layer, num_layers, d)
        tokens = self.latent_size if mlp_dist else 2 * self.latent_size
        self.global_motion_token = nn.Parameter(torch.randn(tokens, d))
        if mlp_dist:
            self.dist_layer = nn.Linear(d, 2 * d)
        self.skel_embedding = nn.Linear(nfeats, d)
        self.final_layer = nn.Linear(d, nfeats)

    def encode(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, log σ²), each [latent_size, B, D], of the posterior for padded features [B, T, F]."""
        b, t, _ = features.shape
        valid = lengths_to_mask(lengths, t)
        x = self.skel_embedding(features).permute(1, 0, 2)  # [T, B, D]
        dist = self.global_motion_token[:, None, :].expand(-1, b, -1)  # [tokens, B, D]
        valid = torch.cat([torch.ones(b, dist.shape[0], dtype=torch.bool, device=x.device), valid], dim=1)
        xseq = self.query_pos_encoder(torch.cat([dist, x], dim=0))
        dist = self.encoder(xseq, padding=~valid)[: dist.shape[0]]
        if self.mlp_dist:
            dist = self.dist_layer(dist)
            return dist[..., : self.latent_dim], dist[..., self.latent_dim :]
        return dist[: self.latent_size], dist[self.latent_size :]

    def decode(self, z: Tensor, lengths: Tensor, num_frames: int | None = None) -> Tensor:
        """Latent tokens [latent_size, B, D] -> features [B, T, F], T = num_frames or max(lengths); padding = 0."""
        t = int(num_frames or lengths.max())
        b = z.shape[1]
        valid = lengths_to_mask(lengths, t)
        queries = torch.zeros(t, b, self.latent_dim, device=z.device, dtype=z.dtype)
        if self.arch == "encoder_decoder":
            out = self.decoder(self.query_pos_decoder(queries), memory=z, padding=~valid)
        else:
            full = torch.cat([torch.ones(b, z.shape[0], dtype=torch.bool, device=z.device), valid], dim=1)
            out = self.decoder(self.query_pos_decoder(torch.cat([z, queries], dim=0)), padding=~full)[z.shape[0] :]
        out = self.final_layer(out).permute(1, 0, 2)  # [B, T, F]
        return out * valid[..., None].to(out.dtype)


class MldDenoiser(nn.Module):
    """ε prediction for latent tokens: forward(x [B, L, D], timesteps [B], text_embed [B, D_text]) -> [B, L, D]."""

    def __init__(
        self,
        latent_dim: tuple[int, int] = (1, 256),
        ff_size: int = 1024,
        num_layers: int = 9,
        num_heads: int = NUM_HEADS,
        dropout: float = 0.1,
        normalize_before: bool = False,
        activation: str = "gelu",
        flip_sin_to_cos: bool = True,
        freq_shift: float = 0,
        text_encoded_dim: int = 768,
        max_len: int = 500,
    ):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        d = int(latent_dim[-1])
        self.latent_dim, self.text_encoded_dim = d, text_encoded_dim
        self.time_proj = Timesteps(text_encoded_dim, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(text_encoded_dim, d)
        if text_encoded_dim != d:
            self.emb_proj = nn.Sequential(nn.ReLU(), nn.Linear(text_encoded_dim, d))
        self.query_pos = LearnedPositions(d, max_len)
        self.mem_pos = LearnedPositions(d, max_len)  # unused by the released trans_enc forward; kept for the names
        layer = _encoder_layer(d, num_heads, ff_size, dropout, activation, normalize_before)
        self.encoder = SkipTransformer(layer, num_layers, d)

    def forward(self, x: Tensor, timesteps: Tensor, text_embed: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n_latent = x.shape[:2]
        timesteps = timesteps.reshape(-1).expand(b) if timesteps.numel() == 1 else timesteps.reshape(-1)
        time = self.time_embedding(self.time_proj(timesteps).to(x.dtype))[None]  # [1, B, D]
        text = text_embed[None]  # [1, B, D_text]
        if self.text_encoded_dim != self.latent_dim:
            text = self.emb_proj(text)
        xseq = torch.cat([x.permute(1, 0, 2), time, text], dim=0)  # [L + 2, B, D]
        return self.encoder(self.query_pos(xseq))[:n_latent].permute(1, 0, 2)


def mld_noise_scheduler():
    """MLD's training scheduler (`configs/modules/scheduler.yaml` noise_scheduler): scaled-linear betas
    0.00085..0.012 over 1000 steps, ε prediction, no clipping."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        variance_type="fixed_small", clip_sample=False, prediction_type="epsilon",
    )


MLD_DDIM = {"set_alpha_to_one": False, "steps_offset": 1}  # the released sampling scheduler's overrides


# ---------------------------------------------------------------------------------------------- checkpoints


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _depth(state: dict[str, Tensor], stack: str) -> int:
    blocks = {k.split(".")[2] for k in state if k.startswith(f"{stack}.input_blocks.")}
    return 2 * len(blocks) + 1


def _need(state: dict[str, Tensor], key: str, where: str) -> Tensor:
    if key not in state:
        raise UserError(f"{where}: missing key '{key}'")
    return state[key]


def vae_kwargs(state: dict[str, Tensor], where: str) -> dict[str, Any]:
    """MldVae sizes read off a state dict (heads excepted)."""
    skel = _need(state, "skel_embedding.weight", where)
    mlp_dist = "dist_layer.weight" in state
    tokens = _need(state, "global_motion_token", where).shape[0]
    return dict(
        nfeats=skel.shape[1],
        latent_dim=(tokens if mlp_dist else tokens // 2, skel.shape[0]),
        ff_size=_need(state, "encoder.middle_block.linear1.weight", where).shape[0],
        num_layers=_depth(state, "encoder"),
        arch="encoder_decoder" if "decoder.middle_block.multihead_attn.in_proj_weight" in state else "all_encoder",
        mlp_dist=mlp_dist,
        max_len=_need(state, "query_pos_encoder.pe", where).shape[0],
    )


def denoiser_kwargs(state: dict[str, Tensor], latent_size: int, where: str) -> dict[str, Any]:
    lin1 = _need(state, "encoder.middle_block.linear1.weight", where)
    return dict(
        latent_dim=(latent_size, lin1.shape[1]),
        ff_size=lin1.shape[0],
        num_layers=_depth(state, "encoder"),
        text_encoded_dim=_need(state, "time_embedding.linear_1.weight", where).shape[1],
        max_len=_need(state, "query_pos.pe", where).shape[0],
    )


def read_lightning(path: str | Path) -> dict[str, Tensor]:
    """The flat `state_dict` of a Lightning checkpoint (or a bare state dict), read by genpref.safe_load."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model.path: MLD checkpoint not found: {path}")
    # a released .ckpt also holds Lightning's metadata and OmegaConf hyper_parameters: read as inert data
    ckpt = load_weights(path, "MLD checkpoint")
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: expected a Lightning checkpoint (a dict with 'state_dict'), got {type(ckpt).__name__}")
    state = ckpt.get("state_dict", ckpt)
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def load_mld(path: str | Path, vae_path: str | Path | None = None) -> tuple[MldVae, MldDenoiser, dict[str, Tensor]]:
    """A released MLD Lightning checkpoint -> (vae, denoiser, the file's full state dict).

    vae_path: take the VAE from another checkpoint (e.g. the VAE-stage `vae.` file) instead."""
    state = read_lightning(path)
    vae_state = _strip(read_lightning(vae_path) if vae_path else state, "vae.")
    vae_where = str(vae_path or path)
    if not vae_state:
        raise UserError(f"{vae_where}: no 'vae.' weights (is this an MLD checkpoint of the diffusion stage?)")
    den_state = _strip(state, "denoiser.")
    if not den_state:
        raise UserError(f"{path}: no 'denoiser.' weights (a VAE-stage checkpoint goes to model.vae_path)")
    vae = MldVae(**vae_kwargs(vae_state, vae_where))
    load_state_strict(vae, vae_state, Path(vae_where))
    denoiser = MldDenoiser(**denoiser_kwargs(den_state, vae.latent_size, str(path)))
    load_state_strict(denoiser, den_state, Path(path))
    return vae, denoiser, state


def save_mld(vae: MldVae, denoiser: nn.Module, path: str | Path, base: dict[str, Tensor] | None = None, meta: dict | None = None) -> Path:
    """Write a Lightning-layout checkpoint: {'state_dict': {vae.*, denoiser.*, + the base file's other keys}}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in (base or {}).items() if not k.startswith(("vae.", "denoiser."))}
    state.update({f"vae.{k}": v.detach().cpu().clone() for k, v in vae.state_dict().items()})
    state.update({f"denoiser.{k}": v.detach().cpu().clone() for k, v in denoiser.state_dict().items()})
    torch.save({"state_dict": state, "genpref": dict(meta or {})}, path)
    return path
