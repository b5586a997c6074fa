"""`model.reference: RUN_DIR`: an earlier run (here a 2-step SFT run) as the frozen reference of a DPO run.

The reference's errors must be those of the SFT run's model, loaded independently from its final/ weights,
and differ from the base's; a bad directory, another model kind or an objective without a reference fail
with one line naming model.reference."""

import math

import pytest
import torch
from test_train_loop import toy_cfg

from genpref import build
from genpref.config import ConfigError, dump_yaml, from_dict, load_config
from genpref.errors import UserError
from genpref.forward import branch_errors
from genpref.noising import noised_branch
from genpref.run import build_run
from genpref.rundir import read_metrics
from genpref.toy import ToyAdapter
from genpref.train import train


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "sft"
    train(toy_cfg(out, "train.max_steps=2", "train.checkpoint_every=2", "train.lr=5e-2", objective="sft"))
    return out


def toy_branch(adapter):
    g = torch.Generator().manual_seed(3)
    batch = adapter.encode([[1.0, 0.5], [-2.0, 0.1], [0.3, 2.2], [0.0, -1.9]], ["right", "left", "up", "down"])
    t = torch.randint(0, 100, (4,), generator=g)
    eps = torch.randn(4, 2, generator=g)
    return {"x": noised_branch(adapter.noise_scheduler, batch, t, eps)}


def sft_errors_by_hand(sft_dir, branch):
    """The SFT run's model rebuilt as that run built it (seed 0, toy LoRA) with its exported final/ weights."""
    from safetensors.torch import load_file

    torch.manual_seed(0)
    adapter = ToyAdapter(toy_cfg(sft_dir / "again", objective="sft"), "cpu")
    adapter.denoiser.load_state_dict(load_file(str(sft_dir / "final" / "toy.safetensors")))
    adapter.denoiser.eval()
    with torch.no_grad():
        err, _ = branch_errors(adapter, branch, False)
        with adapter.reference():  # LoRA off: the base
            base, _ = branch_errors(adapter, branch, False)
    return err["x"], base["x"]


@pytest.mark.parametrize("lora", [True, False])
def test_reference_is_the_earlier_runs_model(sft_run, tmp_path, lora):
    """A LoRA and a full fine-tuning DPO run: their reference errors are the SFT model's, not the base's."""
    extra = () if lora else ("model.lora=null",)
    cfg = toy_cfg(tmp_path / "dpo", f"model.reference={sft_run}", *extra)
    run = build_run(cfg)
    branch = toy_branch(run.adapter)
    with torch.no_grad():
        err, ref = branch_errors(run.adapter, branch, True)
    expected, base = sft_errors_by_hand(sft_run, branch)
    assert torch.allclose(ref["x"], expected, rtol=1e-6, atol=1e-7)
    assert (ref["x"] - base).abs().max() > 1e-4  # the SFT steps moved the model
    assert (err["x"] - base).abs().max() < 1e-7 if lora else True  # the policy still starts at the base
    assert not any(p.requires_grad for p in run.adapter.ref_denoiser.parameters())


def test_dpo_trains_a_step_against_an_sft_reference(sft_run, tmp_path):
    out = tmp_path / "dpo"
    train(toy_cfg(out, f"model.reference={sft_run}", "train.max_steps=1", "train.checkpoint_every=0"))
    row = read_metrics(out)[0]
    assert row["e_w"] != row["e_ref_w"]  # at step 1 the policy is the base, the reference is not


def check(*overrides, out):
    build.check(toy_cfg(out, *overrides))


def test_reference_errors_name_the_key(sft_run, tmp_path):
    with pytest.raises(ConfigError, match=r"'model.reference': .*nowhere does not exist"):
        check(f"model.reference={tmp_path / 'nowhere'}", out=tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"'model.reference': .*empty/config.yaml not found"):
        check(f"model.reference={tmp_path / 'empty'}", out=tmp_path / "a")
    other = tmp_path / "other"
    other.mkdir()
    dump_yaml(from_dict({"model": {"kind": "tiny-sd"}, "objective": {"name": "sft"}, "train": {"output_dir": str(other)}}),
              other / "config.yaml")
    with pytest.raises(ConfigError, match=r"'model.reference': .*other/config.yaml has model.kind='tiny-sd' but this run has model.kind='toy'"):
        check(f"model.reference={other}", out=tmp_path / "a")
    with pytest.raises(ConfigError, match=r"'model.reference' is set, but objective.name=sft uses no reference"):
        build.check(toy_cfg(tmp_path / "a", f"model.reference={sft_run}", objective="sft"))
    no_ckpt = tmp_path / "no_ckpt"
    train(toy_cfg(no_ckpt, "train.max_steps=1", "train.checkpoint_every=0", objective="sft"))
    with pytest.raises(UserError, match=r"'model.reference': .*no_ckpt/checkpoints holds no complete, finite checkpoint"):
        build_run(toy_cfg(tmp_path / "b", f"model.reference={no_ckpt}"))


def test_motion_oaif_against_an_sft_run(tmp_path):
    """tiny MDM (full fine-tuning): 1 SFT step, then online DPO from that run's final/ model.pt with that run as
    the reference: policy = reference at the first step (loss ln 2), and the reference holds the SFT weights."""
    from genpref.cli import main
    from genpref.safe_load import load_weights

    cfg = "configs/motion/tiny_mdm_oaif.yaml"
    common = ["train.max_steps=1", "train.checkpoint_every=1", "train.lr=1e-2", "train.sample_prompts=[]"]
    sft, dpo = tmp_path / "sft", tmp_path / "dpo"
    assert main(["train", cfg, f"train.output_dir={sft}", "objective.name=sft", "data.source=null", *common]) == 0
    assert main(["train", cfg, f"train.output_dir={dpo}", f"model.reference={sft}", f"model.path={sft / 'final' / 'model.pt'}",
                 *common]) == 0
    row = read_metrics(dpo)[0]
    assert row["e_w"] == pytest.approx(row["e_ref_w"], rel=1e-5) and row["loss"] == pytest.approx(math.log(2), rel=1e-4)
    run = build_run(load_config(cfg, [f"train.output_dir={tmp_path / 'again'}", f"model.reference={sft}"]))
    released = load_weights(sft / "final" / "model.pt", "test")
    ref = run.adapter._reference.state_dict()
    shared = [k for k in released if k in ref]
    assert len(shared) > 10 and all(torch.equal(ref[k], released[k]) for k in shared)
    base = run.adapter.denoiser.state_dict()
    assert any(not torch.equal(base[k], released[k]) for k in shared)
