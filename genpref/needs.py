"""What each objective asks of a run: the reference, reward-model extras, online samples, its default data.

Build, the pair sources and the online-RL source read these declarations instead of comparing objective
names. Torch-free, so that `genpref validate` can read them; each objective class in genpref.objectives
points at its entry (`needs = NEEDS[...]`).
"""

from __future__ import annotations

from dataclasses import dataclass

# what an objective trains on that the policy generates during the run (Needs.online)
ONLINE = {
    "rollout_states": "states of policy rollouts with the rollout copy's predictions (DiffusionDRO)",
    "samples": "finished policy samples, K per item, scored by the reward model (SoPo)",
    "transitions": "stochastic-DDIM transitions with their log-probs, group-normalised advantages (GRPO / DDPO)",
    "finished_samples": "finished policy samples of any solver, group-normalised advantages (DiffusionNFT)",
    "accepted_samples": "finished policy samples the reward accepts (rejection sampling, RAFT / ReST)",
}


@dataclass(frozen=True)
class Needs:
    source: str  # the data.source it reads when the config names none
    reference: bool = True  # the frozen reference's errors on its branches (GRPO: only for its own KL term)
    own_kl: bool = False  # objective.kl_weight is its own term; else HyPO's on-policy "kl" branch is added
    loser_reward: bool = False  # extras["loser_reward"]: the reward model's score of the dispreferred sample
    similarity: bool = False  # extras["winner_similarity"]: the reward model's winner–sample similarity
    online: str | None = None  # what the policy must generate for it (a key of ONLINE); None: dataset samples
    margin_pairs: bool = False  # a function of (w, l) pairs' implicit reward margin: select.by applies
    rollout_jitter: bool = False  # the published recipe perturbs the rollouts' timesteps (DiffusionDRO)

    @property
    def extras(self) -> tuple[str, ...]:
        """The per-sample extras it reads that only a reward-scoring source fills in."""
        return ("loser_reward",) * self.loser_reward + ("winner_similarity",) * self.similarity


# objective.name -> its needs (names mirrored in genpref.build.OBJECTIVES and genpref.objectives.FROM_CONFIG)
NEEDS = {
    "sft": Needs("experts", reference=False),
    "dpo": Needs("offline_pairs", margin_pairs=True),
    "dro": Needs("expert_rollouts", online="rollout_states", margin_pairs=True, rollout_jitter=True),
    "sopo": Needs("sopo_online", online="samples", loser_reward=True, similarity=True),
    "kto": Needs("ratings"),
    "direct_reward": Needs("ratings"),
    "grpo": Needs("group_rollouts", reference=False, own_kl=True, online="transitions"),
    "nft": Needs("group_rollouts", reference=False, own_kl=True, online="finished_samples"),
    "rft": Needs("group_rollouts", reference=False, own_kl=True, online="accepted_samples"),
}
