"""train.precompute_reference: reference errors computed ahead equal the live reference's on the same draws,
across epochs, micro-batches and a resume; online sources are refused with one line."""

import shutil

import pytest
import torch

from genpref.build import check
from genpref.config import ConfigError, from_dict, merge_overrides
from genpref.errors import UserError
from genpref.precompute import table_dir
from genpref.rundir import read_metrics
from genpref.train import train

LORA = {"rank": 4, "alpha": 4, "targets": ["net.0", "net.2"]}


def toy_cfg(out, *overrides, objective="dpo"):
    """20 items, 8 per step: 8 steps run through 3.2 epochs, and some batches straddle two epochs."""
    data = {
        "model": {"kind": "toy", "lora": dict(LORA)},
        "data": {"max_items": 20},
        "objective": {"name": objective, "beta": 50.0},
        "train": {"output_dir": str(out), "max_steps": 8, "batch_size": 8, "lr": 1e-2, "checkpoint_every": 4,
                  "tensorboard": False},
    }
    return from_dict(merge_overrides(data, list(overrides)))


def rows(run):
    keys = ("loss", "e_w", "e_ref_w", "e_l", "e_ref_l", "margin")
    return [{k: r.get(k) for k in keys} for r in read_metrics(run)]


@pytest.mark.parametrize("extra", [(), ("train.grad_accum=2", "train.batch_size=4"), ("model.lora=null",)],
                         ids=["lora", "accumulation", "full-fine-tune"])
def test_precomputed_reference_gives_the_live_losses(tmp_path, extra):
    train(toy_cfg(tmp_path / "live", *extra))
    train(toy_cfg(tmp_path / "pre", *extra, "train.precompute_reference=true"))
    live, pre = rows(tmp_path / "live"), rows(tmp_path / "pre")
    assert len(live) == 8 and live == pre  # bit for bit: same batches, same forward
    assert live[-1]["e_w"] != live[-1]["e_ref_w"]  # the policy moved: the reference really is the frozen one
    cfg = toy_cfg(tmp_path / "pre", *extra)
    tables = {p.name.split("-")[0] for p in table_dir(cfg).iterdir()}
    assert tables == {f"epoch{start // 20}" for start in range(0, 64, cfg.train.batch_size)}  # one per epoch begun


def test_kto_on_ratings_matches_too(tmp_path):
    train(toy_cfg(tmp_path / "live", objective="kto"))
    train(toy_cfg(tmp_path / "pre", "train.precompute_reference=true", objective="kto"))
    assert rows(tmp_path / "live") == rows(tmp_path / "pre")


def test_resume_with_precomputed_reference_is_exact(tmp_path):
    """8 steps == 4 steps + resume, with the tables reused from the cache or, when deleted, recomputed."""
    on = "train.precompute_reference=true"
    train(toy_cfg(tmp_path / "a", on))
    for name, drop_tables in (("b", False), ("c", True)):
        out = tmp_path / name
        train(toy_cfg(out, on, "train.max_steps=4"))
        if drop_tables:
            shutil.rmtree(table_dir(toy_cfg(out)))
        train(toy_cfg(out, on, "train.resume=latest"))
        assert rows(out) == rows(tmp_path / "a"), name


def test_tables_are_reused_and_guard_against_changed_data(tmp_path):
    from genpref.build import build_adapter, build_source
    from genpref.online import RolloutPolicy
    from genpref.precompute import PrecomputedReference
    from genpref.recipes import SourceContext

    cfg = toy_cfg(tmp_path / "run", "train.precompute_reference=true")

    def wrapped():
        torch.manual_seed(0)
        adapter = build_adapter(cfg, torch.device("cpu"), torch.float32)
        ctx = SourceContext(adapter, cfg, torch.device("cpu"), rollout=RolloutPolicy(adapter.trainable_parameters(), 1))
        return PrecomputedReference(build_source(ctx, cfg))

    first = wrapped()
    tb = first.next(0, 0)
    assert first.computed_batches == 3  # epoch 0 holds the batches starting at positions 0, 8 and 16
    assert set(tb.reference) == {"w", "l"} and tb.reference["w"].shape == (8,)
    again = wrapped()
    assert torch.equal(again.next(0, 0).reference["w"], tb.reference["w"]) and again.computed_batches == 0

    from safetensors.torch import load_file, save_file

    path = again.path(0)
    table = load_file(str(path))
    table["8/w/check"] = table["8/w/check"] + 1.0  # as if the dataset had changed under the same key
    save_file(table, str(path))
    stale = wrapped()
    with pytest.raises(UserError, match=r"epoch0-rank0-.*: the data changed since these reference errors were computed"):
        stale.next(1, 0)


@pytest.mark.parametrize("overrides, message", [
    (("objective.name=dro",), "'train.precompute_reference' needs offline data (data.source offline_pairs, experts, "
                              "ratings); 'expert_rollouts' draws its samples online, so their reference errors cannot "
                              "be computed ahead"),
    (("select.by=implicit_margin",), "'train.precompute_reference' cannot serve select.by or objective.kl_weight, "
                                     "which run the reference on online samples"),
    (("objective.name=sft",), "'train.precompute_reference': objective.name=sft uses no reference"),
])
def test_online_sources_are_refused(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        check(toy_cfg(tmp_path, "train.precompute_reference=true", *overrides))
    assert str(err.value) == message


def test_tiny_sd_through_the_cli_matches_the_live_reference(tmp_path):
    """The image path (VAE latents from the cache, CLIP text, LoRA toggle) as a user types it, 3 steps over a
    16-pair epoch with batch 8: the precomputed run logs the live run's numbers."""
    from pathlib import Path

    from genpref.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "image" / "tiny_dpo.yaml"
    for name, flag in (("live", "false"), ("pre", "true")):
        assert main(["train", str(config), f"train.output_dir={tmp_path / name}", "train.max_steps=3",
                     "train.batch_size=8", "train.checkpoint_every=0", "train.sample_prompts=[]",
                     f"train.precompute_reference={flag}"]) == 0
    live, pre = rows(tmp_path / "live"), rows(tmp_path / "pre")
    assert len(live) == 3 and live == pre
    assert live[-1]["e_w"] != live[-1]["e_ref_w"]
