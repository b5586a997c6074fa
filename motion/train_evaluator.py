"""Train a T2M text–motion evaluator on any HumanML3D-format directory (EricGuo5513/text-to-motion recipe).

    python -m motion.train_evaluator --root DATA --glove GLOVE_DIR --out RUN [--epochs 300] [--decomp-epochs 270]

Two stages, as the reference trains them (`train_decomp_v3.py`, then `train_tex_mot_match.py`):
1. movement autoencoder: `MovementConvEncoder` + `MovementConvDecoder` on random 40-frame windows of the
   train motions, L1 reconstruction + 0.001·sparsity (mean |latent|) + 0.001·smoothness (L1 between
   consecutive latents), Adam 1e-4, batch 128. Skip it with `--movement-checkpoint` (a decomp
   `latest.tar` with key `movement_enc`, or a finest.tar with `movement_encoder`).
2. text–motion matching: the movement encoder frozen (eval mode, no gradient), text and motion BiGRU
   encoders trained with the contrastive loss of Hadsell et al.: positives pull matched pairs together
   (d²), negatives are the batch's motions shifted by a random offset and pushed beyond the margin 10
   (max(0, 10 − d)²); Adam 1e-4, gradient norm clipped at 0.5, batch 32 of (random caption, crop to a
   multiple of 4 frames) per motion and epoch. After every epoch the validation loss decides whether
   `RUN/model/finest.tar` is replaced.
Normalisation: the dataset's Mean/Std with the std of the 4 root channels and the 4 foot contacts
divided by `--feat-bias` 5 (the reference's meta statistics), written to `RUN/meta/{mean,std}.npy`,
where `motion.evaluator.Evaluator.load(RUN/model/finest.tar)` finds them.

Differences from the reference, on purpose: the negative shift is drawn from 1..B−1 (the reference's
randint(0, B−1) can pick 0 and push matched pairs apart); the validation loss is the mean over batches
(the reference divides by batches + 1); decomp windows come from the motions the evaluation loader keeps
(40 ≤ T < 200 and caption spans) rather than every file of the split; no resume.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from genpref.errors import UserError
from genpref.safe_load import load_weights
from motion.eval_data import MAX_MOTION_LENGTH, EvalSplit, load_split, pad_batch, sample_pass
from motion.evaluator import EvaluatorSizes, MovementConvDecoder, build_networks
from motion.glove import WordVectorizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m motion.train_evaluator", description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="HumanML3D-format directory (new_joint_vecs, texts, Mean/Std, splits)")
    p.add_argument("--glove", required=True, help="directory with our_vab_data.npy, our_vab_words.pkl, our_vab_idx.pkl")
    p.add_argument("--glove-prefix", default="our_vab", help="word-vector file prefix")
    p.add_argument("--out", required=True, help="run directory: model/finest.tar, model/decomp.tar, meta/, log.jsonl")
    p.add_argument("--epochs", type=int, default=300, help="matching epochs (reference: 300)")
    p.add_argument("--decomp-epochs", type=int, default=270, help="movement autoencoder epochs (reference: 270)")
    p.add_argument("--max-steps", type=int, default=None, help="cap the optimizer steps of each stage (smoke runs)")
    p.add_argument("--movement-checkpoint", default=None, help="reuse a trained movement encoder, skip stage 1")
    p.add_argument("--batch-size", type=int, default=32, help="matching batch (reference: 32)")
    p.add_argument("--decomp-batch-size", type=int, default=128, help="autoencoder batch (reference: 128)")
    p.add_argument("--window", type=int, default=40, help="autoencoder window in frames (reference: 40)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of both stages (reference: 1e-4)")
    p.add_argument("--margin", type=float, default=10.0, help="contrastive negative margin (reference: 10)")
    p.add_argument("--feat-bias", type=float, default=5.0, help="std divisor of root and foot channels (reference: 5)")
    p.add_argument("--lambda-sparsity", type=float, default=0.001, help="autoencoder latent L1 weight")
    p.add_argument("--lambda-smooth", type=float, default=0.001, help="autoencoder latent smoothness weight")
    p.add_argument("--movement-hidden", type=int, default=512, help="movement encoder/decoder hidden size")
    p.add_argument("--movement-latent", type=int, default=512, help="movement latent size")
    p.add_argument("--text-hidden", type=int, default=512, help="text BiGRU hidden size")
    p.add_argument("--motion-hidden", type=int, default=1024, help="motion BiGRU hidden size")
    p.add_argument("--coemb", type=int, default=512, help="co-embedding size")
    p.add_argument("--min-length", type=int, default=40, help="shortest motion kept (HumanML3D 40, KIT-ML 24)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, windows, captions and crops")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    return p.parse_args(argv)


def evaluator_statistics(root: Path, feat_bias: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean/Std of the dataset with the root (first 4) and foot-contact (last 4) std divided by feat_bias."""
    stats = []
    for name in ("Mean.npy", "Std.npy"):
        try:
            stats.append(np.load(root / name, allow_pickle=False).astype(np.float32))
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {root / name}: {e}") from None
    mean, std = stats
    if mean.ndim != 1 or mean.shape != std.shape or not np.isfinite(mean).all() or not (std > 0).all():
        raise UserError(f"{root}/Mean.npy and Std.npy must be finite vectors of one size, Std > 0")
    std = std.copy()
    std[:4] /= feat_bias
    std[-4:] /= feat_bias
    return mean, std


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, negative: bool, margin: float) -> torch.Tensor:
    """Hadsell et al.: mean d² for matched pairs, mean max(0, margin − d)² for mismatched ones."""
    d = F.pairwise_distance(a, b)
    return (torch.clamp(margin - d, min=0.0) ** 2 if negative else d**2).mean()


class Stage:
    """Shared plumbing of both stages: device, log file, step cap."""

    def __init__(self, args: argparse.Namespace, out: Path):
        self.device = torch.device(args.device)
        self.max_steps = args.max_steps
        self.log_path = out / "log.jsonl"

    def log(self, **record) -> None:
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), flush=True)


def train_movement_autoencoder(args, stage: Stage, networks, train: EvalSplit, mean, std, out: Path) -> None:
    """Stage 1: the movement encoder learns 4-frame movement latents by reconstruction."""
    encoder = networks["movement_encoder"].to(stage.device)
    decoder = MovementConvDecoder(args.movement_latent, args.movement_hidden, len(mean)).to(stage.device)
    windows = [(i, s) for i, e in enumerate(train.entries) for s in range(len(e.motion) - args.window + 1)]
    if not windows:
        raise UserError(f"no train motion is {args.window} frames long (--window)")
    steps_per_epoch = max(1, len(windows) // args.decomp_batch_size)
    total = args.decomp_epochs * steps_per_epoch
    total = min(total, args.max_steps) if args.max_steps else total
    opt_enc = torch.optim.Adam(encoder.parameters(), lr=args.lr)
    opt_dec = torch.optim.Adam(decoder.parameters(), lr=args.lr)
    rng = np.random.default_rng([args.seed, 1])
    encoder.train(), decoder.train()
    for step in range(total):
        picks = rng.integers(len(windows), size=args.decomp_batch_size)
        batch = np.stack([train.entries[windows[k][0]].motion[windows[k][1] : windows[k][1] + args.window] for k in picks])
        x = torch.from_numpy((batch - mean) / std).float().to(stage.device)  # [B, window, F]
        latents = encoder(x[..., :-4])
        loss_rec = F.l1_loss(decoder(latents), x)
        loss = (loss_rec + args.lambda_sparsity * latents.abs().mean()
                + args.lambda_smooth * F.l1_loss(latents[:, 1:], latents[:, :-1]))  # fmt: skip
        opt_enc.zero_grad(), opt_dec.zero_grad()
        loss.backward()
        opt_enc.step(), opt_dec.step()
        if (step + 1) % steps_per_epoch == 0 or step + 1 == total:
            stage.log(stage="decomp", step=step + 1, epoch=(step + 1) // steps_per_epoch, loss_rec=loss_rec.item())
    torch.save({"movement_enc": encoder.state_dict(), "movement_dec": decoder.state_dict(), "total_it": total},
               out / "model" / "decomp.tar")  # fmt: skip


def load_movement_encoder(path: str, encoder: torch.nn.Module) -> None:
    try:
        checkpoint = load_weights(path, "movement encoder checkpoint")
        state = checkpoint.get("movement_enc", checkpoint.get("movement_encoder"))
        encoder.load_state_dict(state)
    except (OSError, RuntimeError, AttributeError, TypeError, KeyError) as e:
        raise UserError(f"--movement-checkpoint {path}: not a movement encoder of these sizes ({e})") from None


def _batches(split: EvalSplit, vectorizer: WordVectorizer, rng, batch_size: int, mean, std):
    """One epoch of the reference loader: shuffled entries, random caption and crop, drop_last."""
    sample = sample_pass(split, rng)
    for start in range(0, len(sample.order) - batch_size + 1, batch_size):
        tokens = sample.tokens[start : start + batch_size]
        motions = [(m - mean) / std for m in sample.motions[start : start + batch_size]]
        word, pos, cap_lens = vectorizer.encode_batch(tokens)
        yield word, pos, cap_lens, pad_batch(motions, MAX_MOTION_LENGTH), sample.lengths[start : start + batch_size]


def _matching_losses(networks, batch, device, margin, rng):
    word, pos, cap_lens, motions, m_lens = batch
    text_emb = networks["text_encoder"](torch.from_numpy(word).to(device), torch.from_numpy(pos).to(device),
                                        torch.from_numpy(cap_lens))  # fmt: skip
    with torch.no_grad():
        movements = networks["movement_encoder"](torch.from_numpy(motions).to(device)[..., :-4])
    motion_emb = networks["motion_encoder"](movements, torch.from_numpy(m_lens // 4))
    shift = int(rng.integers(1, len(m_lens)))  # never 0: a shift of 0 would label matched pairs negative
    loss_pos = contrastive_loss(text_emb, motion_emb, False, margin)
    loss_neg = contrastive_loss(text_emb, torch.roll(motion_emb, shift, dims=0), True, margin)
    return loss_pos, loss_neg


def train_matching(args, stage: Stage, networks, train, val, vectorizer, mean, std, out: Path) -> None:
    """Stage 2: contrastive text–motion matching; keeps the epoch with the lowest validation loss."""
    device = stage.device
    for net in networks.values():
        net.to(device)
    params = {k: list(networks[k].parameters()) for k in ("text_encoder", "motion_encoder")}
    optimizers = {k: torch.optim.Adam(p, lr=args.lr) for k, p in params.items()}
    rng = np.random.default_rng([args.seed, 2])
    best, step = float("inf"), 0
    for epoch in range(1, args.epochs + 1):
        networks["text_encoder"].train(), networks["motion_encoder"].train(), networks["movement_encoder"].eval()
        for batch in _batches(train, vectorizer, rng, args.batch_size, mean, std):
            loss_pos, loss_neg = _matching_losses(networks, batch, device, args.margin, rng)
            for opt in optimizers.values():
                opt.zero_grad()
            (loss_pos + loss_neg).backward()
            for p in params.values():
                torch.nn.utils.clip_grad_norm_(p, 0.5)
            for opt in optimizers.values():
                opt.step()
            step += 1
            if args.max_steps and step >= args.max_steps:
                break
        for net in networks.values():
            net.eval()
        with torch.no_grad():
            val_losses = [sum(_matching_losses(networks, b, device, args.margin, rng)).item()
                          for b in _batches(val, vectorizer, rng, args.batch_size, mean, std)]  # fmt: skip
        val_loss = float(np.mean(val_losses)) if val_losses else float("nan")
        stage.log(stage="match", epoch=epoch, step=step, train_pos=loss_pos.item(), train_neg=loss_neg.item(),
                  val_loss=val_loss)  # fmt: skip
        if val_loss < best or not np.isfinite(best):
            best = val_loss
            torch.save({**{k: networks[k].state_dict() for k in networks},
                        **{f"opt_{k}": opt.state_dict() for k, opt in optimizers.items()},
                        "epoch": epoch, "iter": step}, out / "model" / "finest.tar")  # fmt: skip
        if args.max_steps and step >= args.max_steps:
            break


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> Path:
    torch.manual_seed(args.seed)
    root, out = Path(args.root), Path(args.out)
    vectorizer = WordVectorizer.load(args.glove, args.glove_prefix)
    mean, std = evaluator_statistics(root, args.feat_bias)
    train = load_split(root, "train", len(mean), args.min_length)
    val = load_split(root, "val", len(mean), args.min_length)
    if len(train.entries) < args.batch_size or len(val.entries) < args.batch_size:
        raise UserError(f"train and val need at least --batch-size {args.batch_size} motions each "
                        f"({len(train.entries)} and {len(val.entries)} found in {root})")  # fmt: skip
    (out / "model").mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(exist_ok=True)
    np.save(out / "meta" / "mean.npy", mean)
    np.save(out / "meta" / "std.npy", std)
    sizes = EvaluatorSizes(dim_pose=len(mean), dim_movement_enc_hidden=args.movement_hidden,
                           dim_movement_latent=args.movement_latent, dim_word=vectorizer.dim,
                           dim_text_hidden=args.text_hidden, dim_coemb_hidden=args.coemb,
                           dim_motion_hidden=args.motion_hidden)  # fmt: skip
    networks = build_networks(sizes)
    stage = Stage(args, out)
    if args.movement_checkpoint:
        load_movement_encoder(args.movement_checkpoint, networks["movement_encoder"])
    else:
        train_movement_autoencoder(args, stage, networks, train, mean, std, out)
    train_matching(args, stage, networks, train, val, vectorizer, mean, std, out)
    return out / "model" / "finest.tar"


if __name__ == "__main__":
    raise SystemExit(main())
