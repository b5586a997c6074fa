"""The T2M text–motion evaluator (Guo et al. 2022): its three networks, checkpoint loading and normalisation.

Module and parameter names, shapes and forward passes follow EricGuo5513/text-to-motion
`networks/modules.py` so that the released `t2m/text_mot_match/model/finest.tar` loads as is
(keys `text_encoder`, `motion_encoder`, `movement_encoder`). HumanML3D sizes: 263-d poses, movement
encoder 259 -> 512 -> 512 (the 4 foot-contact channels dropped, time downsampled by 4 = unit length),
motion BiGRU hidden 1024, text BiGRU hidden 512 over 300-d GloVe + 15-way POS, 512-d co-embeddings.

Two things differ from the released wrapper on purpose, neither changes a number on the inputs the
reference sees: packing uses `enforce_sorted=False`, so any batch order gives the embeddings the
length-sorted reference batch gives (outputs come back in the caller's order); and `embed_motion`
zeroes frames at and after each motion's length by default (the ground-truth loader pads with zeros in
normalised space); `padding="model"` keeps them, as MDM's and MLD's generated loaders do (the frames
after a length leak into the last convolution windows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from genpref.errors import UserError
from genpref.safe_load import load_weights

DIM_POSE = 263
UNIT_LENGTH = 4


@dataclass(frozen=True)
class EvaluatorSizes:
    """The released T2M evaluator's sizes (text-to-motion `evaluator_wrapper.py` / `train_tex_mot_match.py`)."""

    dim_pose: int = DIM_POSE
    dim_movement_enc_hidden: int = 512
    dim_movement_latent: int = 512
    dim_word: int = 300
    dim_pos_ohot: int = 15
    dim_text_hidden: int = 512
    dim_coemb_hidden: int = 512
    dim_motion_hidden: int = 1024
    unit_length: int = UNIT_LENGTH


def init_weight(module: nn.Module) -> None:
    """Xavier-normal weights and zero biases for conv and linear layers, as the reference initialises."""
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class MovementConvEncoder(nn.Module):
    """Poses [B, T, input_size] -> movement latents [B, T // 4, output_size] (two stride-2 convolutions)."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv1d(input_size, hidden_size, 4, 2, 1),
            nn.Dropout(0.2),
            nn.LeakyReLU(0.2),
            nn.Conv1d(hidden_size, output_size, 4, 2, 1),
            nn.Dropout(0.2),
            nn.LeakyReLU(0.2),
        )
        self.out_net = nn.Linear(output_size, output_size)
        self.main.apply(init_weight)
        self.out_net.apply(init_weight)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = self.main(inputs.permute(0, 2, 1)).permute(0, 2, 1)  # [B, T // 4, output_size]
        return self.out_net(outputs)


class MovementConvDecoder(nn.Module):
    """Movement latents [B, T // 4, input_size] -> poses [B, T, output_size]; only used to pretrain the encoder."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose1d(input_size, hidden_size, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose1d(hidden_size, output_size, 4, 2, 1),
            nn.LeakyReLU(0.2),
        )
        self.out_net = nn.Linear(output_size, output_size)
        self.main.apply(init_weight)
        self.out_net.apply(init_weight)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.out_net(self.main(inputs.permute(0, 2, 1)).permute(0, 2, 1))


def _bigru_last(gru: nn.GRU, inputs: torch.Tensor, lengths: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Final forward and backward states of a BiGRU over padded sequences -> [B, 2·hidden]."""
    packed = pack_padded_sequence(inputs, lengths.cpu().long(), batch_first=True, enforce_sorted=False)
    _, last = gru(packed, hidden.repeat(1, inputs.shape[0], 1).contiguous())  # last: [2, B, hidden]
    return torch.cat([last[0], last[1]], dim=-1)


def _co_embedding_head(hidden_size: int, output_size: int) -> nn.Sequential:
    """BiGRU final states [B, 2·hidden] -> co-embedding [B, output_size] (keys output_net.0/.1/.3)."""
    return nn.Sequential(
        nn.Linear(hidden_size * 2, hidden_size),
        nn.LayerNorm(hidden_size),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden_size, output_size),
    )


class TextEncoderBiGRUCo(nn.Module):
    """Word vectors [B, L, 300] + POS one-hots [B, L, 15] + lengths [B] -> text embeddings [B, output_size]."""

    def __init__(self, word_size: int, pos_size: int, hidden_size: int, output_size: int, device=None):
        super().__init__()
        self.pos_emb = nn.Linear(pos_size, word_size)
        self.input_emb = nn.Linear(word_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = _co_embedding_head(hidden_size, output_size)
        self.input_emb.apply(init_weight)
        self.pos_emb.apply(init_weight)
        self.output_net.apply(init_weight)
        self.hidden_size = hidden_size
        self.hidden = nn.Parameter(torch.randn((2, 1, hidden_size)))  # learned initial state of both directions

    def forward(self, word_embs: torch.Tensor, pos_onehot: torch.Tensor, cap_lens: torch.Tensor) -> torch.Tensor:
        inputs = self.input_emb(word_embs + self.pos_emb(pos_onehot))
        return self.output_net(_bigru_last(self.gru, inputs, cap_lens, self.hidden))


class MotionEncoderBiGRUCo(nn.Module):
    """Movement latents [B, T // 4, input_size] + unit lengths [B] -> motion embeddings [B, output_size]."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, device=None):
        super().__init__()
        self.input_emb = nn.Linear(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = _co_embedding_head(hidden_size, output_size)
        self.input_emb.apply(init_weight)
        self.output_net.apply(init_weight)
        self.hidden_size = hidden_size
        self.hidden = nn.Parameter(torch.randn((2, 1, hidden_size)))

    def forward(self, inputs: torch.Tensor, m_lens: torch.Tensor) -> torch.Tensor:
        return self.output_net(_bigru_last(self.gru, self.input_emb(inputs), m_lens, self.hidden))


def build_networks(sizes: EvaluatorSizes = EvaluatorSizes()) -> dict[str, nn.Module]:
    """The three networks under their checkpoint keys."""
    return {
        "text_encoder": TextEncoderBiGRUCo(sizes.dim_word, sizes.dim_pos_ohot, sizes.dim_text_hidden, sizes.dim_coemb_hidden),
        "motion_encoder": MotionEncoderBiGRUCo(sizes.dim_movement_latent, sizes.dim_motion_hidden, sizes.dim_coemb_hidden),
        "movement_encoder": MovementConvEncoder(
            sizes.dim_pose - 4, sizes.dim_movement_enc_hidden, sizes.dim_movement_latent
        ),
    }


NETWORK_KEYS = ("text_encoder", "motion_encoder", "movement_encoder")


def _load_state(module: nn.Module, state, key: str, path: Path) -> None:
    if not isinstance(state, dict):
        raise UserError(f"{path}: entry '{key}' is not a state dict")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise UserError(
            f"{path}: '{key}' does not match the T2M evaluator: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        name, got, want = wrong[0]
        raise UserError(f"{path}: '{key}.{name}' has shape {got}, the evaluator expects {want}")
    module.load_state_dict(state)


def read_checkpoint(path: str | Path) -> dict:
    """The finest.tar dict, read by genpref.safe_load (its optimizer states too); a missing file or key is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"T2M evaluator checkpoint not found: {path}")
    checkpoint = load_weights(path, "T2M evaluator checkpoint")
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path} is not a T2M evaluator checkpoint (expected a dict with {NETWORK_KEYS})")
    missing = [k for k in NETWORK_KEYS if k not in checkpoint]
    if missing:
        raise UserError(f"{path} lacks the key(s) {missing}; a T2M evaluator checkpoint has {NETWORK_KEYS}")
    return checkpoint


def infer_sizes(checkpoint: dict) -> EvaluatorSizes:
    """Sizes read off the tensors, so evaluators trained here with smaller networks load too."""
    try:
        text, motion, movement = (checkpoint[k] for k in NETWORK_KEYS)
        return EvaluatorSizes(
            dim_pose=movement["main.0.weight"].shape[1] + 4,
            dim_movement_enc_hidden=movement["main.0.weight"].shape[0],
            dim_movement_latent=movement["main.3.weight"].shape[0],
            dim_word=text["pos_emb.weight"].shape[0],
            dim_pos_ohot=text["pos_emb.weight"].shape[1],
            dim_text_hidden=text["input_emb.weight"].shape[0],
            dim_coemb_hidden=text["output_net.3.weight"].shape[0],
            dim_motion_hidden=motion["input_emb.weight"].shape[0],
        )
    except (KeyError, IndexError, AttributeError, TypeError) as e:
        raise UserError(f"T2M evaluator checkpoint lacks the tensor {e} needed to read its sizes") from None


def find_statistics(checkpoint_path: str | Path) -> tuple[Path, Path]:
    """The evaluator's own mean/std next to finest.tar: `<run>/meta/{mean,std}.npy` (the layout
    `train_tex_mot_match.py` / `motion.train_evaluator` write), else the released layout, where the
    evaluation loader reads `t2m/Comp_v6_KLD01/meta/{mean,std}.npy` beside `t2m/text_mot_match/`."""
    run_dir = Path(checkpoint_path).resolve().parent.parent
    candidates = [run_dir / "meta", run_dir.parent / "Comp_v6_KLD01" / "meta"]
    for meta in candidates:
        if (meta / "mean.npy").is_file() and (meta / "std.npy").is_file():
            return meta / "mean.npy", meta / "std.npy"
    raise UserError(
        f"evaluator statistics mean.npy/std.npy not found in {' or '.join(str(c) for c in candidates)}; "
        "pass their paths explicitly"
    )


def _read_statistic(path: Path, dim: int, positive: bool) -> np.ndarray:
    try:
        value = np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read evaluator statistics {path}: {e}") from None
    if value.shape != (dim,):
        raise UserError(f"{path} has shape {value.shape}, expected ({dim},)")
    if not np.isfinite(value).all() or (positive and (value <= 0).any()):
        raise UserError(f"{path} holds non-finite{' or non-positive' if positive else ''} values")
    return value


class Evaluator:
    """The T2M evaluator: co-embeds captions and motions; motions must be normalised with its own statistics.

    `embed_text(word_embs [B, L, 300], pos_ohot [B, L, 15], cap_lens [B])` and
    `embed_motion(motions [B, T, 263], m_lens [B])` return [B, 512] float32 tensors in the caller's order.
    `normalise(features)` maps de-normalised HumanML3D features to the evaluator's input space.
    """

    def __init__(self, networks: dict[str, nn.Module], mean: np.ndarray, std: np.ndarray,
                 unit_length: int = UNIT_LENGTH, device: str | torch.device = "cpu"):  # fmt: skip
        self.device = torch.device(device)
        self.text_encoder = networks["text_encoder"].to(self.device).eval()
        self.motion_encoder = networks["motion_encoder"].to(self.device).eval()
        self.movement_encoder = networks["movement_encoder"].to(self.device).eval()
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.unit_length = unit_length

    @classmethod
    def load(cls, checkpoint_path: str | Path, mean_path: str | Path | None = None,
             std_path: str | Path | None = None, device: str | torch.device = "cpu") -> Evaluator:  # fmt: skip
        """Load finest.tar (weights_only) and the evaluator's mean/std (found by `find_statistics` if not given)."""
        checkpoint_path = Path(checkpoint_path)
        checkpoint = read_checkpoint(checkpoint_path)
        sizes = infer_sizes(checkpoint)
        networks = build_networks(sizes)
        for key in NETWORK_KEYS:
            _load_state(networks[key], checkpoint[key], key, checkpoint_path)
        if mean_path is None or std_path is None:
            found_mean, found_std = find_statistics(checkpoint_path)
            mean_path, std_path = mean_path or found_mean, std_path or found_std
        mean = _read_statistic(Path(mean_path), sizes.dim_pose, positive=False)
        std = _read_statistic(Path(std_path), sizes.dim_pose, positive=True)
        return cls(networks, mean, std, sizes.unit_length, device)

    def normalise(self, features):
        """De-normalised features [..., 263] -> the evaluator's input space, (x − mean) / std."""
        if isinstance(features, torch.Tensor):
            mean = torch.as_tensor(self.mean, device=features.device, dtype=features.dtype)
            return (features - mean) / torch.as_tensor(self.std, device=features.device, dtype=features.dtype)
        return (np.asarray(features, dtype=np.float32) - self.mean) / self.std

    def _tensor(self, x) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(self.device).float()

    @torch.no_grad()
    def embed_text(self, word_embs, pos_ohot, cap_lens) -> torch.Tensor:
        cap_lens = torch.as_tensor(np.asarray(cap_lens) if not isinstance(cap_lens, torch.Tensor) else cap_lens)
        return self.text_encoder(self._tensor(word_embs), self._tensor(pos_ohot), cap_lens.long())

    @torch.no_grad()
    def embed_motion(self, motions, m_lens, padding: str = "zero") -> torch.Tensor:
        """padding "zero": frames at and after each length are zeroed (the ground-truth loaders' padding);
        "model": they are left as given (MDM / MLD show the evaluator the model's output there)."""
        motions = self._tensor(motions)
        m_lens = torch.as_tensor(np.asarray(m_lens) if not isinstance(m_lens, torch.Tensor) else m_lens).long()
        units = m_lens // self.unit_length
        if (units < 1).any() or (m_lens > motions.shape[1]).any():
            raise UserError(
                f"motion lengths must lie in [{self.unit_length}, {motions.shape[1]}] frames, got "
                f"{m_lens.min().item()}..{m_lens.max().item()}"
            )
        if padding == "zero":
            valid = torch.arange(motions.shape[1], device=self.device)[None, :] < m_lens.to(self.device)[:, None]
            motions = motions * valid[..., None]
        elif padding != "model":
            raise UserError(f"padding must be 'zero' or 'model', got {padding!r}")
        movements = self.movement_encoder(motions[..., :-4])  # drop the 4 foot-contact channels
        return self.motion_encoder(movements, units)
