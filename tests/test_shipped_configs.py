"""Every production config under configs/ trains one real step, with its model swapped for the tiny twin
of the same family and its data for tiny data of the same format.

What is kept from the shipped file: the model family, LoRA or full fine-tuning, the objective and its
constants, the pair source, the online settings (solver by name, K, annotator, sync), the reward names,
EMA and the guards. What is swapped: weights (random tiny twin), data paths (tiny data of the same
format), sizes, step counts and precision (CPU). So a wrong model kind, objective, solver or reward name
in a shipped config fails here, not on a user's GPU."""

from pathlib import Path

import pytest

from genpref import build
from genpref.config import load_config_values
from genpref.rundir import read_metrics
from genpref.train import train

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = sorted(
    [*(ROOT / "configs/image").glob("sd15_*.yaml"), *(ROOT / "configs/image").glob("sdxl_*.yaml"),
     *(ROOT / "configs/motion").glob("mdm_*.yaml"), *(ROOT / "configs/motion").glob("mld_*.yaml")]
)  # fmt: skip
TWIN = {"sd15": "tiny-sd", "sdxl": "tiny-sdxl", "mdm": "tiny-mdm", "mld": "tiny-mld"}
# production annotators -> a tiny verifier of the same modality (the real ones need downloaded weights)
REWARD_TWIN = {"pickscore": "shapes", "clip": "shapes", "hpsv2": "shapes", "aesthetic": "shapes", "t2m": "tiny-motion"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from image.tasks import tiny_data as image_tiny
    from motion.tasks import tiny_data as motion_tiny

    base = tmp_path_factory.mktemp("tiny-data")
    paths = {k: str(v) for k, v in image_tiny.ensure(base / "image", 32).items()}
    paths["root"] = str(motion_tiny.ensure(base / "humanml"))
    return paths


def test_the_production_configs_are_all_here():
    names = [p.name for p in PRODUCTION]
    assert names == ["sd15_dpo.yaml", "sd15_dro.yaml", "sd15_grpo.yaml", "sd15_oaif.yaml", "sdxl_dpo.yaml",
                     "sdxl_dro.yaml", "mdm_grpo.yaml", "mdm_sopo.yaml", "mld_grpo.yaml", "mld_sopo.yaml"]  # fmt: skip


def tiny_twin_values(shipped, tiny_data: dict, out: Path) -> dict:
    """Overrides that swap model, data and sizes of a shipped config, and nothing it names."""
    values = {"model.kind": TWIN[shipped.model.kind], "model.path": None, "model.text_encoder": None,
              "model.vae_path": None, "model.use_avg": False}  # fmt: skip
    for key in ("pairs", "experts", "prompts", "ratings", "root"):
        if getattr(shipped.data, key) is not None:
            values[f"data.{key}"] = tiny_data[key]
    if shipped.data.root is not None:
        values.update({"data.max_motion_length": 64, "data.min_motion_length": 40})
    else:
        values["data.resolution"] = 32
    if shipped.reward.models:
        values["reward.models"] = [{"name": REWARD_TWIN[s.name], "weight": s.weight} for s in shipped.reward.models]
    values.update({"online.steps": 2, "train.output_dir": str(out), "train.max_steps": 1, "train.batch_size": 2,
                   "train.grad_accum": 1, "train.mixed_precision": "no", "train.checkpoint_every": 0,
                   "train.tensorboard": False, "train.sample_prompts": shipped.train.sample_prompts[:1],
                   "train.sample_seeds": [0]})  # fmt: skip
    if shipped.online.batch_size is not None:
        values["online.batch_size"] = 2
    return values


@pytest.mark.parametrize("path", PRODUCTION, ids=lambda p: p.stem)
def test_production_config_trains_one_step_on_its_tiny_twin(path, tiny_data, tmp_path):
    from genpref.config import load_config

    shipped = load_config(path)
    assert shipped.model.kind in TWIN, f"{path.name}: model.kind {shipped.model.kind!r} has no tiny twin"
    # the shipped names as written, with only the data paths made to exist
    named = load_config_values(path, {f"data.{k}": tiny_data[k] for k in ("pairs", "experts", "prompts", "ratings", "root")
                                      if getattr(shipped.data, k) is not None})  # fmt: skip
    build.check(named)
    cfg = load_config_values(path, tiny_twin_values(shipped, tiny_data, tmp_path / "run"))
    assert (cfg.objective, cfg.online.solver, cfg.data.source) == (shipped.objective, shipped.online.solver, shipped.data.source)
    train(cfg)
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 1 and rows[0]["loss"] is not None
    assert (tmp_path / "run" / "final").is_dir()
