"""End to end on CPU: `genpref train configs/image/tiny_dpo.yaml` / `tiny_dro.yaml` as a user types them,
then `sample` and `export` on the finished run."""

import json
from pathlib import Path

import torch
from PIL import Image

from genpref.cli import main
from image.commands import export, load_run, sample

ROOT = Path(__file__).resolve().parents[1]


def _train(config: str, out: Path, *overrides: str) -> list[dict]:
    rc = main(["train", str(ROOT / "configs" / "image" / config), f"train.output_dir={out}", "train.max_steps=2",
               "train.checkpoint_every=0", *overrides])
    assert rc == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tiny_dpo_trains_samples_and_exports(tmp_path):
    run = tmp_path / "dpo"
    rows = _train("tiny_dpo.yaml", run, "online.steps=2")
    assert [r["step"] for r in rows] == [1, 2] and all("loss" in r and "implicit_acc" in r for r in rows)
    assert (run / "final" / "pytorch_lora_weights.safetensors").is_file()
    assert (run / "config.yaml").is_file() and (run / "samples" / "final.png").is_file()

    out = sample(run, ["a red square in the top left", "a blue circle"], seeds=[0, 1], out=tmp_path / "grid.png",
                 steps=2, guidance=2.0)
    grid = Image.open(out)
    assert grid.size == (64, 64)  # 2 prompts × 2 seeds of 32 px
    assert main(["sample", str(run), "--prompt", "a blue circle", "--seed", "1", "--out", str(tmp_path / "one.png"),
                 "--steps", "2", "--guidance", "2.0"]) == 0
    single = Image.open(tmp_path / "one.png")
    assert single.size == (32, 32)
    assert list(grid.crop((32, 32, 64, 64)).getdata()) == list(single.getdata())  # a tile = its own (prompt, seed)

    kohya = export(run, "kohya", tmp_path / "export")
    assert kohya.name == "lora_kohya.safetensors" and kohya.is_file()


def test_tiny_dro_trains_with_rollouts_and_a_trained_lora(tmp_path):
    run = tmp_path / "dro"
    rows = _train("tiny_dro.yaml", run)
    assert all(r["rollouts"] >= 1 for r in rows)
    # the rollout copy is the policy (sync_every 1): its recorded predictions are reproduced exactly at step 1
    assert rows[0]["e_l"] < 1e-8
    adapter = load_run(run)
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([400])
    batch = adapter.encode_prompts(["a red square in the top left"])
    with torch.no_grad():
        policy = adapter.predict(x, t, batch)
        with adapter.reference():
            reference = adapter.predict(x, t, batch)
    assert (policy - reference).abs().max() > 0  # the trained LoRA came back from final/
