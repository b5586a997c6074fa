"""The shipped weights of the `moves` task (motion/assets/moves/): a small base MDM pretrained on noisy
captions and a T2M evaluator trained on the task; where they are, how they are made, and training them
on the spot when they are missing.

    python -m motion.tasks.moves.weights [--data data/moves] [--work runs/moves-assets]   # rebuild them
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from genpref.demo import recipe_config
from genpref.safe_load import load_weights
from motion.tasks import moves

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "motion"
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "moves"  # motion/assets/moves
BASE = ASSETS / "base" / "model.pt"  # MDM (released layout, args.json beside it)
EVALUATOR = ASSETS / "evaluator"  # model/finest.tar + meta/{mean,std}.npy
# the base MDM of the moves task: 3 layers, 96 wide (0.32 M parameters), 100-step cosine schedule
BASE_MDM = {"latent_dim": 96, "ff_size": 192, "num_layers": 3, "num_heads": 4, "diffusion_steps": 100}


def write_initial_model(out_dir: Path, seed: int = 0) -> Path:
    """A randomly initialised BASE_MDM (released layout) conditioned on the moves text encoder (300-d)."""
    from motion.mdm import MDM, released_args, save_mdm

    size = {k: v for k, v in BASE_MDM.items() if k != "diffusion_steps"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MDM(**size, clip_dim=300, mask_frames=True, pos_embed_max_len=256)
    return save_mdm(model, out_dir, released_args(model, BASE_MDM["diffusion_steps"]))


def pretrain_base(data_root: Path, run_dir: Path, seed: int = 0) -> Path:
    """configs/motion/moves_base.yaml from a fresh BASE_MDM: SFT on the noisy captions."""
    from genpref.train import train

    init = write_initial_model(run_dir.parent / f"{run_dir.name}-init", seed)
    shutil.rmtree(run_dir, ignore_errors=True)
    train(recipe_config(CONFIGS, "moves_base.yaml", {"model.path": str(init), "model.text_encoder": str(data_root / "text_encoder"),
                                            "data.root": str(data_root / "noisy"), "train.output_dir": str(run_dir),
                                            "train.seed": seed}))  # fmt: skip
    return run_dir / "final" / "model.pt"


EVALUATOR_ARGS = ["--epochs", "40", "--decomp-epochs", "20", "--movement-hidden", "128", "--movement-latent", "128",
                  "--text-hidden", "128", "--motion-hidden", "128", "--coemb", "128", "--batch-size", "32",
                  "--lr", "1e-3"]  # fmt: skip


def train_evaluator(data_root: Path, run_dir: Path, seed: int = 0) -> Path:
    """A small T2M evaluator on the moves data (python -m motion.train_evaluator with EVALUATOR_ARGS)."""
    from motion import train_evaluator as te

    shutil.rmtree(run_dir, ignore_errors=True)
    te.run(te.parse_args(["--root", str(data_root), "--glove", str(data_root / "glove"), "--out", str(run_dir),
                          "--seed", str(seed), "--device", "cpu", *EVALUATOR_ARGS]))  # fmt: skip
    shutil.copytree(data_root / "glove", run_dir / "glove", dirs_exist_ok=True)
    return run_dir


def base_and_evaluator(out_dir: Path, data_root: Path, seed: int = 0) -> tuple[Path, Path]:
    """The shipped base MDM and evaluator, or (when missing) ones trained now (tens of minutes on a CPU)."""
    import warnings

    base, evaluator = BASE, EVALUATOR
    if not base.is_file():
        warnings.warn(f"{BASE} is missing: pretraining the base now (python -m motion.tasks.moves.weights ships it)", stacklevel=2)
        base = out_dir / "runs" / "base" / "final" / "model.pt"
        if not base.is_file():
            base = pretrain_base(data_root, out_dir / "runs" / "base", seed)
    if not (evaluator / "model" / "finest.tar").is_file():
        warnings.warn(f"{EVALUATOR} is missing: training the T2M evaluator now", stacklevel=2)
        evaluator = out_dir / "runs" / "evaluator"
        if not (evaluator / "model" / "finest.tar").is_file():
            train_evaluator(data_root, evaluator, seed)
    return base, evaluator


def build_assets(data_dir: Path, work_dir: Path, seed: int = 0) -> tuple[Path, Path]:
    """Rebuild the shipped weights: the data, the base (configs/motion/moves_base.yaml from a seeded
    BASE_MDM) and the evaluator (EVALUATOR_ARGS), copied into motion/assets/moves/."""
    from motion.evaluator import NETWORK_KEYS

    data_root = moves.build(data_dir, progress=True)
    final = pretrain_base(data_root, work_dir / "base", seed)
    evaluator = train_evaluator(data_root, work_dir / "evaluator", seed)
    (ASSETS / "base").mkdir(parents=True, exist_ok=True)
    for name in ("model.pt", "args.json"):
        shutil.copyfile(final.parent / name, ASSETS / "base" / name)
    checkpoint = load_weights(evaluator / "model" / "finest.tar", "T2M evaluator checkpoint")
    (EVALUATOR / "model").mkdir(parents=True, exist_ok=True)
    torch.save({k: checkpoint[k] for k in NETWORK_KEYS}, EVALUATOR / "model" / "finest.tar")  # no optimizer state
    for sub in ("meta", "glove"):
        shutil.copytree(evaluator / sub, EVALUATOR / sub, dirs_exist_ok=True)
    return ASSETS / "base" / "model.pt", EVALUATOR


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m motion.tasks.moves.weights",
                                     description="Rebuild motion/assets/moves (base MDM and T2M evaluator).")
    parser.add_argument("--data", default="data/moves")
    parser.add_argument("--work", default="runs/moves-assets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_assets(Path(args.data), Path(args.work), args.seed))


if __name__ == "__main__":
    main()
