"""`genpref reward train` for motion on a tiny random T2M evaluator and the tiny HumanML3D data: the head is
fitted on the evaluator's embeddings, the `learned` reward scores like the head applied here by hand to
T2MReward's embeddings, and one DiffusionNFT step runs with it."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genpref import build
from genpref.cli import main
from genpref.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/motion/tiny_mdm_nft_learned.yaml"
WORDS = ["sos", "eos", "unk", "a", "person", "walk", "jump", "forward", "turn", "wave", "slowly", "quickly"]


def write_evaluator(directory: Path) -> Path:
    """model/finest.tar of small random networks, meta/ statistics and glove/ word vectors (dim 8)."""
    from motion.evaluator import EvaluatorSizes, build_networks

    torch.manual_seed(0)
    sizes = EvaluatorSizes(dim_movement_enc_hidden=16, dim_movement_latent=16, dim_word=8, dim_text_hidden=16,
                           dim_coemb_hidden=8, dim_motion_hidden=16)
    nets = build_networks(sizes)
    for sub in ("model", "meta", "glove"):
        (directory / sub).mkdir(parents=True)
    torch.save({k: v.state_dict() for k, v in nets.items()}, directory / "model" / "finest.tar")
    np.save(directory / "meta" / "mean.npy", np.zeros(263, np.float32))
    np.save(directory / "meta" / "std.npy", np.ones(263, np.float32))
    rng = np.random.default_rng(0)
    np.save(directory / "glove" / "our_vab_data.npy", rng.normal(size=(len(WORDS), 8)).astype(np.float32))
    (directory / "glove" / "our_vab_words.pkl").write_bytes(pickle.dumps(WORDS))
    (directory / "glove" / "our_vab_idx.pkl").write_bytes(pickle.dumps({w: i for i, w in enumerate(WORDS)}))
    return directory


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("learned_motion")
    evaluator = write_evaluator(tmp / "evaluator")
    args = ["reward", "train", str(TINY), f"train.output_dir={tmp / 'run'}", f"reward_train.encoder={evaluator}",
            f"reward.models=[{{name: learned, path: {tmp / 'reward'}}}]"]
    assert main(args) == 0
    return tmp


def test_reward_train_on_evaluator_embeddings(trained):
    info = json.loads((trained / "reward" / "reward.json").read_text())
    assert info["modality"] == "motion" and info["glove"] == str((trained / "evaluator" / "glove").resolve())
    assert info["embedding_dim"] == 8 and info["in_features"] == 24
    assert info["data"]["pair_count"] > 0 and info["data"]["rating_count"] == 2 * info["data"]["pair_count"]
    assert set(info["metrics"]["heldout"]) == {"pairs", "ratings"}


def test_learned_motion_reward_scores_by_hand(trained):
    from safetensors.torch import load_file

    from motion.rewards import T2MReward

    cfg = load_config(TINY, [f"reward.models=[{{name: learned, path: {trained / 'reward'}}}]", f"train.output_dir={trained / 'run'}"])
    reward = build.build_reward(cfg, torch.device("cpu"))
    rng = np.random.default_rng(1)
    motions = [rng.normal(size=(n, 263)).astype(np.float32) for n in (40, 52)]
    prompts = ["a person walks forward slowly", "a person jumps"]
    got = reward.score(motions, prompts)
    t2m = T2MReward.load(trained / "evaluator")
    s, t = t2m.embed_motions(motions).float(), t2m.embed_texts(prompts).float()
    s, t = s / s.norm(dim=1, keepdim=True), t / t.norm(dim=1, keepdim=True)
    w = load_file(str(trained / "reward" / "reward_head.safetensors"))
    hidden = F.gelu(torch.cat([s, t, s * t], 1) @ w["net.0.weight"].T + w["net.0.bias"])
    expected = (hidden @ w["net.2.weight"].T + w["net.2.bias"]).squeeze(1)
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)


def test_learned_reward_drives_one_nft_step(trained):
    run = trained / "nft"
    code = main(["train", str(TINY), f"train.output_dir={run}", f"reward.models=[{{name: learned, path: {trained / 'reward'}}}]"])
    assert code == 0
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1 and np.isfinite(rows[-1]["loss"])


def test_similarity_init_scores_by_hand_and_drives_an_nft_step_with_kl(trained):
    """reward_train.init=similarity: r = τ·cos(s, t) + the head's correction, τ and the head from the file;
    then an NFT step with objective.kl_weight on it."""
    from safetensors.torch import load_file

    from motion.rewards import T2MReward

    directory = trained / "reward-sim"
    assert main(["reward", "train", str(TINY), f"train.output_dir={trained / 'run-sim'}", "reward_train.init=similarity",
                 f"reward_train.encoder={trained / 'evaluator'}", f"reward.models=[{{name: learned, path: {directory}}}]"]) == 0
    assert json.loads((directory / "reward.json").read_text())["init"] == "similarity"
    cfg = load_config(TINY, [f"reward.models=[{{name: learned, path: {directory}}}]", f"train.output_dir={trained / 'run'}"])
    motions = [np.random.default_rng(2).normal(size=(44, 263)).astype(np.float32)] * 2
    prompts = ["a person walks forward slowly", "a person jumps"]
    got = build.build_reward(cfg, torch.device("cpu")).score(motions, prompts)
    t2m = T2MReward.load(trained / "evaluator")
    s, t = F.normalize(t2m.embed_motions(motions).float(), dim=1), F.normalize(t2m.embed_texts(prompts).float(), dim=1)
    w = load_file(str(directory / "reward_head.safetensors"))
    hidden = F.gelu(torch.cat([s, t, s * t], 1) @ w["net.0.weight"].T + w["net.0.bias"])
    expected = (hidden @ w["net.2.weight"].T + w["net.2.bias"]).squeeze(1) + w["prior_scale"] * (s * t).sum(1)
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)
    run = trained / "nft-kl"
    assert main(["train", str(TINY), f"train.output_dir={run}", "objective.kl_weight=1.0",
                 f"reward.models=[{{name: learned, path: {directory}}}]"]) == 0
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1 and rows[-1]["kl"] < 1e-10  # the first step's policy is the reference


def test_data_ties_for_motion_pairs():
    from motion.learned_reward import _with_ties

    pairs = [{"label": 1.0}, {"label": 0.5}, {"label": 0.8}]
    assert [p["label"] for p in _with_ties(pairs, "drop")] == [1.0, 0.8]
    assert [p["label"] for p in _with_ties(pairs, "half")] == [1.0, 0.5, 0.8]
    assert [p["label"] for p in _with_ties(pairs, "first")] == [1.0, 1.0, 0.8]
