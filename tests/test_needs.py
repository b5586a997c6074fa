"""Objectives declare what they need (genpref.needs); build and the sources act on those declarations, so a
declaration changed in one place changes what build accepts and what the sources do."""

import dataclasses
import types

import pytest

from genpref import build, needs, objectives
from genpref.config import ConfigError, from_dict, merge_overrides


def toy_cfg(out, *overrides, objective="dpo"):
    data = {
        "model": {"kind": "toy", "lora": {"rank": 4, "alpha": 4, "targets": ["net.0", "net.2"]}},
        "objective": {"name": objective, "beta": 50.0},
        "train": {"output_dir": str(out), "max_steps": 2, "batch_size": 4, "checkpoint_every": 0},
    }
    return from_dict(merge_overrides(data, list(overrides)))


def test_every_objective_name_has_needs_a_constructor_and_a_description():
    assert set(needs.NEEDS) == set(build.OBJECTIVES) == set(objectives.FROM_CONFIG)
    for name, need in needs.NEEDS.items():
        assert need.source in build.SOURCES, name
        assert need.online is None or need.online in needs.ONLINE, name


@pytest.mark.parametrize("name", sorted(objectives.FROM_CONFIG))
def test_each_objective_points_at_its_own_declaration(name):
    cfg = toy_cfg("unused", objective=name).objective
    rated = types.SimpleNamespace(num_prompts=3)  # what the direct-reward objective sizes its value table from
    assert objectives.FROM_CONFIG[name](cfg, rated).needs is needs.NEEDS[name]


def test_kl_weight_is_the_objectives_own_term_or_the_hypo_branch_as_declared():
    """GRPO owns its KL (no "kl" branch, no wrapper); DPO does not (WithKL adds the on-policy branch)."""
    grpo = objectives.build_objective(toy_cfg("o", "objective.kl_weight=0.5", objective="grpo").objective)
    assert isinstance(grpo, objectives.GRPO) and "kl" not in grpo.branches and grpo.needs_reference
    dpo = objectives.build_objective(toy_cfg("o", "objective.kl_weight=0.5").objective)
    assert isinstance(dpo, objectives.WithKL) and dpo.branches == ("w", "l", "kl") and dpo.needs is needs.NEEDS["dpo"]


def test_precompute_reference_is_refused_exactly_for_objectives_declaring_no_reference(tmp_path, monkeypatch):
    """Declaring `reference=False` for KTO makes build refuse the precomputed reference for it, naming it."""
    build.check(toy_cfg(tmp_path, "train.precompute_reference=true", objective="kto"))
    monkeypatch.setitem(needs.NEEDS, "kto", dataclasses.replace(needs.NEEDS["kto"], reference=False))
    with pytest.raises(ConfigError, match=r"objective.name=kto uses no reference"):
        build.check(toy_cfg(tmp_path, "train.precompute_reference=true", objective="kto"))


def test_an_objective_declaring_loser_reward_gets_a_source_that_scores_it_and_a_reward_model(tmp_path):
    ok = toy_cfg(tmp_path, "reward.models=[{name: toy}]", objective="sopo")
    build.check(ok)
    assert build.source_name(ok) == "sopo_online"
    with pytest.raises(ConfigError) as err:
        build.check(toy_cfg(tmp_path, "reward.models=[{name: toy}]", "data.source=offline_pairs", objective="sopo"))
    assert str(err.value) == ("objective 'sopo' reads loser_reward, winner_similarity, which data.source=offline_pairs "
                              "does not compute; sources that do: sopo_online")
    with pytest.raises(ConfigError) as err:
        build.check(toy_cfg(tmp_path, objective="sopo"))
    assert str(err.value) == "objective 'sopo' reads loser_reward, winner_similarity from a reward model: set reward.models"


def test_declaring_loser_reward_on_dpo_makes_build_ask_for_it(tmp_path, monkeypatch):
    monkeypatch.setitem(needs.NEEDS, "dpo", dataclasses.replace(needs.NEEDS["dpo"], loser_reward=True))
    with pytest.raises(ConfigError, match=r"objective 'dpo' reads loser_reward, which data.source=offline_pairs does not"):
        build.check(toy_cfg(tmp_path))


def test_select_by_margin_follows_the_margin_pairs_declaration(tmp_path, monkeypatch):
    from genpref.recipes import SelectByMargin, SourceContext
    from genpref.toy import ToyAdapter

    def source(cfg):
        adapter = ToyAdapter(cfg, "cpu")
        return build.build_source(SourceContext(adapter, cfg, adapter.device), cfg)

    cfg = toy_cfg(tmp_path, "select.by=implicit_margin")
    assert isinstance(source(cfg), SelectByMargin)
    monkeypatch.setitem(needs.NEEDS, "dpo", dataclasses.replace(needs.NEEDS["dpo"], margin_pairs=False))
    with pytest.raises(ConfigError, match=r"objective 'dpo' is not a function of"):
        source(cfg)


def test_group_rollouts_train_on_what_the_objective_declares(tmp_path, monkeypatch):
    """The online-RL source keeps transitions, finished samples or accepted samples by Needs.online."""
    from genpref.online import RolloutPolicy
    from genpref.recipes import SourceContext
    from genpref.rl import GroupRollouts
    from genpref.toy import ToyAdapter, build_reward

    cfg = toy_cfg(tmp_path, "reward.models=[{name: toy}]", "online.group_size=2", "online.steps=2", objective="grpo")
    adapter = ToyAdapter(cfg, "cpu")
    reward = build_reward(cfg.reward.models[0], cfg, "cpu")
    ctx = SourceContext(adapter, cfg, adapter.device, rollout=RolloutPolicy(adapter.trainable_parameters()), reward=reward)
    items = adapter.load_items("prompts")
    assert set(GroupRollouts(ctx, items).next(1, 0).branches) == {"g"}
    monkeypatch.setitem(needs.NEEDS, "grpo", dataclasses.replace(needs.NEEDS["grpo"], online="finished_samples"))
    assert set(GroupRollouts(ctx, items).next(1, 0).branches) == {"pos", "neg"}
