"""Trackers through accelerate (TensorBoard, Weights & Biases offline) beside the always-kept metrics.jsonl,
the Hub model card written with every run and every export, and `genpref push` with the Hub API replaced."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_train_loop import toy_cfg

from genpref.cli import main
from genpref.modelcard import key_metrics, write_model_card
from genpref.rundir import read_metrics
from genpref.train import train

ROOT = Path(__file__).resolve().parents[1]


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("card") / "toy_run"
    train(toy_cfg(run, "train.report_to=[tensorboard]", "train.max_steps=10"))
    return run


def test_tensorboard_through_accelerate_keeps_the_jsonl(toy_run):
    rows = read_metrics(toy_run)
    assert [r["step"] for r in rows] == list(range(1, 11))
    events = list((toy_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    logged = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert logged == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in rows]


def test_wandb_offline_gets_every_metric_and_the_config(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "wb_run"
    train(toy_cfg(run, "train.report_to=[wandb]", "train.max_steps=4"))
    rows = read_metrics(run)
    assert len(rows) == 4  # the JSONL log is kept whatever the trackers
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, "wandb wrote no offline run under <run>/wandb"
    data = files[0].read_bytes()
    for key in ("loss", "implicit_acc", "e_ratio_w", "train.lr", "objective.beta"):
        assert key.encode() in data, key
    assert not (run / "tensorboard").exists()  # report_to replaces the default [tensorboard]


def test_report_to_is_checked_by_validate(tmp_path):
    cfg = ROOT / "configs/toy/toy_dpo.yaml"
    bad = subprocess.run([sys.executable, "-m", "genpref", "validate", str(cfg), "train.report_to=[tensorbord]"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2
    assert "'train.report_to[0]' is 'tensorbord' (did you mean 'tensorboard'?)" in bad.stderr


def test_model_card_of_a_tiny_run(toy_run):
    card = (toy_run / "final" / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "genpref" and meta["license"] == "apache-2.0"
    assert {"genpref", "preference-dpo", "lora"} <= set(meta["tags"])
    assert "base_model" not in meta  # the toy model is built from config: no Hub id to name
    rows = read_metrics(toy_run)
    # key metrics: the first logged value and the mean of the last 10% (one step of ten)
    assert f"| loss | {rows[0]['loss']:.4g} | {rows[-1]['loss']:.4g} | 10 |" in card
    assert "10 optimizer steps (of train.max_steps 10) × batch 8 × gradient accumulation 1 × 1 process(es) = 80" in card
    assert "## Recipe" in card and "objective: `dpo`, beta 50.0" in card and "Not evaluated yet" in card


def test_model_card_names_a_hub_base_model_and_carries_the_eval_table(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "samples").mkdir()
    cfg = {"model": {"kind": "sd15", "path": "stable-diffusion-v1-5/stable-diffusion-v1-5", "lora": {"rank": 8, "alpha": 8, "targets": ["to_q"]}},
           "objective": {"name": "dro", "beta": None}, "data": {"experts": "data/experts", "source": None}, "reward": {"models": []},
           "train": {"lr": 1e-5, "lr_scheduler": "constant", "warmup_steps": 0, "mixed_precision": "fp16", "seed": 0,
                     "max_steps": 20, "batch_size": 4, "grad_accum": 2}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "run.json").write_text(json.dumps({"world_size": 2}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 21)))
    (run / "eval" / "eval.txt").write_text("scorer  model  mean\nclip    run    31.2\n")
    from PIL import Image

    Image.new("RGB", (8, 8)).save(run / "samples" / "final.png")
    (run / "samples" / "final.txt").write_text("a fox\na cat\n")
    card = write_model_card(run).read_text()
    meta = front_matter(card)
    assert meta["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert meta["library_name"] == "diffusers" and meta["license"] == "creativeml-openrail-m" and "text-to-image" in meta["tags"]
    assert "clip    run    31.2" in card
    assert "![a fox | a cat](sample_final.png)" in card and (run / "final" / "sample_final.png").is_file()
    assert "20 optimizer steps (of train.max_steps 20) × batch 4 × gradient accumulation 2 × 2 process(es) = 320" in card
    assert f"| loss | 1 | {(1 / 19 + 1 / 20) / 2:.4g} | 20 |" in card  # last 10% of 20 steps = steps 19, 20
    assert key_metrics([{"step": 1, "loss": None}]) == []


def test_every_image_run_and_export_carries_a_card(tmp_path):
    run = tmp_path / "tiny_dpo"
    assert main(["train", str(ROOT / "configs/image/tiny_dpo.yaml"), f"train.output_dir={run}", "train.max_steps=2",
                 "train.checkpoint_every=0", "online.steps=2"]) == 0
    meta = front_matter((run / "final" / "README.md").read_text())
    assert meta["library_name"] == "diffusers" and "text-to-image" in meta["tags"] and "lora" in meta["tags"]
    assert (run / "final" / "sample_final.png").is_file()
    assert main(["export", str(run), "--out", str(tmp_path / "exported")]) == 0
    exported = tmp_path / "exported"
    assert {p.name for p in exported.iterdir()} == {"pytorch_lora_weights.safetensors", "README.md", "sample_final.png"}
    assert main(["export", str(run), "--format", "kohya", "--out", str(tmp_path / "k" / "lora.safetensors")]) == 0
    assert (tmp_path / "k" / "lora.md").is_file() and not (tmp_path / "k" / "README.md").exists()


def test_push_uploads_final_through_huggingface_hub(toy_run, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))
            return type("Commit", (), {"commit_url": f"https://hf.co/{kw['repo_id']}/commit/abc"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    (toy_run / "final" / "README.md").unlink()  # push writes a fresh card first
    assert main(["push", str(toy_run), "--repo", "me/toy-dpo", "--private"]) == 0
    assert calls[0] == ("create_repo", "me/toy-dpo", {"repo_type": "model", "private": True, "exist_ok": True})
    upload = calls[1][1]
    assert upload["folder_path"] == str(toy_run / "final") and upload["repo_id"] == "me/toy-dpo"
    assert (toy_run / "final" / "README.md").is_file()
    assert "https://hf.co/me/toy-dpo/commit/abc" in capsys.readouterr().out
    assert main(["push", str(toy_run.parent / "missing"), "--repo", "me/x"]) == 1
