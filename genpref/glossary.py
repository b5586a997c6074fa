"""What every metric name in metrics.jsonl, the demo tables and eval.json means, which direction is better,
and how its interval is computed: the glossary the reports print beside their tables and curves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    label: str  # a short name for people
    meaning: str  # one sentence
    better: str | None = None  # "higher" | "lower" | None (neither: a diagnostic)
    interval: str | None = None  # how the 95% interval of an evaluation row is computed


WILSON = "Wilson score interval of a proportion over the n samples"
BOOTSTRAP = "percentile bootstrap of the mean over the n items"
LN2 = 0.6931471805599453  # the DPO / SoPo loss when the policy equals the reference

TERMS: dict[str, Term] = {
    # ---- training (metrics.jsonl)
    "loss": Term("training loss", "The objective's loss averaged over the batch (DPO and SoPo start at ln 2 = 0.693, "
                 "their value when the policy equals the reference).", "lower"),
    "implicit_acc": Term("implicit accuracy", "Fraction of pairs the policy ranks right relative to the reference "
                         "(implicit reward margin > 0; exact ties count as half).", "higher"),
    "margin": Term("implicit reward margin", "Mean of (e_ref,w − e_θ,w) − (e_ref,l − e_θ,l): how much more the policy "
                   "prefers the winner than the reference does.", "higher"),
    "margin_min": Term("smallest margin", "Smallest implicit reward margin in the batch."),
    "margin_max": Term("largest margin", "Largest implicit reward margin in the batch."),
    "e_w": Term("policy error on preferred", "Denoising error of the policy on the preferred samples."),
    "e_l": Term("policy error on dispreferred", "Denoising error of the policy on the dispreferred samples."),
    "e_ref_w": Term("reference error on preferred", "Denoising error of the frozen reference on the preferred samples."),
    "e_ref_l": Term("reference error on dispreferred", "Denoising error of the frozen reference on the dispreferred samples."),
    "e_ratio_w": Term("error ratio on preferred", "e_w / e_ref_w: above 1 the policy explains the preferred samples worse "
                      "than the reference (the collapse guard watches it).", "lower"),
    "hinge_active": Term("active hinge fraction", "DRO: fraction of pairs whose hinge is not yet satisfied (they still "
                         "give a gradient)."),
    "open_gate": Term("open gate fraction", "SoPo: fraction of online losers whose reward is below τ, so that the "
                      "loser term is used."),
    "tau": Term("gate threshold τ", "SoPo: the reward threshold in use (fixed, or the batch quantile)."),
    "loser_reward": Term("loser reward", "Mean reward of the chosen online losers."),
    "winner_similarity": Term("winner similarity S", "SoPo: lowest winner–sample similarity; the winner's weight is C − S."),
    "sigmoid_arg_min": Term("smallest sigmoid argument", "SoPo: smallest argument of the log-sigmoid in the batch."),
    "sigmoid_arg_max": Term("largest sigmoid argument", "SoPo: largest argument of the log-sigmoid in the batch."),
    "desirable_frac": Term("desirable fraction", "KTO: fraction of the batch rated desirable."),
    "value": Term("value V(c)", "Direct reward optimisation: mean learned value of the batch's prompts."),
    "residual": Term("reward residual", "Direct reward optimisation: mean |r − V(c) − β·g|.", "lower"),
    "kl": Term("KL to reference", "HyPO: ‖pred_θ − pred_ref‖² on the policy's own samples (DiffusionNFT: on its "
               "noised rollout samples, objective.kl_weight).", "lower"),
    "optimism": Term("SELM optimism term", "SELM: α·mean implicit reward of the two online samples (objective.optimism)."),
    "reward_time_var": Term("per-frame reward variance", "MARLHF: variance over valid frames of the per-frame implicit "
                            "reward (objective.time_mse penalises it).", "lower"),
    "group_distance": Term("diversity within groups", "Online RL: mean distance of each sample to the other samples "
                           "of its prompt's group (unit-length embeddings).", "higher"),
    "diversity_bonus": Term("diversity bonus", "Online RL: mean bonus objective.diversity adds to the rewards before "
                            "the group normalisation."),
    "reward_w": Term("winner reward", "Mean reward of the preferred samples."),
    "reward_l": Term("loser reward", "Mean reward of the dispreferred (online) samples."),
    "reward_online": Term("online sample reward", "Mean reward of all online samples: the policy's own quality as the "
                          "reward model sees it.", "higher"),
    "reward": Term("reward", "Mean reward of the batch's samples.", "higher"),
    "score_best": Term("best sample score", "AI feedback: mean score of the best of K samples."),
    "score_worst": Term("worst sample score", "AI feedback: mean score of the worst of K samples."),
    "score_gap": Term("score gap", "AI feedback: best − worst score of the K samples."),
    "label": Term("soft label", "AI feedback: mean preference probability from the score gap."),
    "buffer": Term("rollout buffer size", "DRO: stored rollout states."),
    "rollouts": Term("rollouts drawn", "DRO: rollouts generated so far."),
    "select_margin_kept": Term("kept pairs' margin", "SeRA: mean implicit margin of the pairs kept."),
    "select_margin_all": Term("drawn pairs' margin", "SeRA: mean implicit margin of all drawn pairs."),
    # ---- online reward RL (GRPO, DiffusionNFT; genpref/rl.py)
    "policy_loss": Term("policy loss", "GRPO: PPO's clipped policy-gradient loss; NFT: the implicit positive/negative "
                        "regression loss (before any anchor or KL term)."),
    "clip_frac": Term("clipped fraction", "GRPO: fraction of transitions whose probability ratio left the clip range."),
    "approx_kl_old": Term("KL to rollout policy", "GRPO: ½·mean(log ratio²), DDPO's estimate of KL(π_old ‖ π_θ).", "lower"),
    "advantage": Term("mean advantage", "Mean of the group-normalised advantages of the batch."),
    "kl_ref": Term("KL to reference", "GRPO: KL of the policy's DDIM step Gaussian to the reference's.", "lower"),
    "optimality": Term("optimality r", "NFT: mean of r = ½ + ½·clip(A / adv_clip, −1, 1)."),
    "e_pos": Term("positive-branch error", "NFT: error of the implicit positive policy on its shifted target."),
    "e_neg": Term("negative-branch error", "NFT: error of the implicit negative policy on its shifted target."),
    "e_accepted": Term("error on accepted samples", "RFT: denoising error on the policy's samples the reward accepted."),
    "holdout_reward": Term("held-out reward", "Mean score of the rollouts by reward.holdout, a reward model not trained "
                           "on: rising reward_mean with falling holdout_reward means reward hacking.", "higher"),
    "reward_mean": Term("rollout reward", "Mean reward of the latest group rollouts.", "higher"),
    "reward_std": Term("rollout reward spread", "Standard deviation of the latest rollouts' rewards."),
    "adv_abs_mean": Term("mean |advantage|", "Mean absolute advantage of the latest rollouts."),
    "adv_max": Term("largest advantage", "Largest advantage of the latest rollouts."),
    "adv_min": Term("smallest advantage", "Smallest advantage of the latest rollouts."),
    "skipped_groups": Term("skipped groups", "Groups whose rewards were all equal (no signal), skipped."),
    "generate_s": Term("rollout time (s)", "Wall time of the latest rollouts."),
    "generated": Term("samples generated", "Online samples generated so far."),
    "batch_s": Term("batch time (s)", "Wall time of building the training batch."),
    "lr": Term("learning rate", "The optimizer's learning rate at this step."),
    "grad_norm": Term("gradient norm", "Norm of the gradient before clipping."),
    "step_time": Term("step time (s)", "Wall time of the optimizer step."),
    "samples_per_s": Term("samples per second", "Training throughput over all processes."),
    # ---- synthetic-task evaluation (the demos)
    "heldout_accuracy": Term("held-out accuracy", "Fraction of samples for held-out prompts that the task's exact "
                             "verifier accepts (every attribute right).", "higher", WILSON),
    "heldout_attribute_score": Term("held-out attribute score", "Mean fraction of a sample's attributes the verifier "
                                    "finds right, over the held-out samples.", "higher", BOOTSTRAP + " (samples)"),
    "test_r_precision_top1": Term("test R-precision top-1", "T2M evaluator: fraction of test texts whose own motion is "
                                  "the nearest of 32.", "higher", BOOTSTRAP + " (test entries)"),
    "test_mm_dist": Term("test MM-Dist", "T2M evaluator: mean distance between a text's and its motion's embeddings.",
                         "lower", BOOTSTRAP + " (test entries)"),
    "test_fid": Term("test FID", "Fréchet distance between the evaluator embeddings of real and generated test motions.",
                     "lower", "none: FID is one number per evaluation pass over the whole test split, so n counts "
                     "passes and the value is their mean; with so few passes no interval is claimed"),
    # ---- T2M protocol (genpref eval, motion)
    "R_precision_top1": Term("R-precision top-1", "Fraction of texts whose motion ranks first among 32.", "higher",
                             "mean ± 1.96·std/√R over R replications"),
    "R_precision_top2": Term("R-precision top-2", "Fraction of texts whose motion ranks in the top 2 of 32.", "higher",
                             "mean ± 1.96·std/√R over R replications"),
    "R_precision_top3": Term("R-precision top-3", "Fraction of texts whose motion ranks in the top 3 of 32.", "higher",
                             "mean ± 1.96·std/√R over R replications"),
    "MM_Dist": Term("MM-Dist", "Mean distance of matched text and motion embeddings.", "lower",
                    "mean ± 1.96·std/√R over R replications"),
    "FID": Term("FID", "Fréchet distance between real and generated motion embeddings.", "lower",
                "mean ± 1.96·std/√R over R replications"),
    "Diversity": Term("diversity", "Mean distance between random pairs of generated motions (close to the real "
                      "motions' value is best).", None, "mean ± 1.96·std/√R over R replications"),
    "MultiModality": Term("multimodality", "Mean distance between motions generated for the same text.", None,
                          "mean ± 1.96·std/√R over R replications"),
    # ---- image eval (genpref eval, images)
    "win_rate": Term("win rate", "P(the model's median-of-K image scores above the other model's for the same "
                     "prompt) + ½·P(tie).", "higher", "percentile bootstrap over prompts"),
}

ATTRIBUTE_PREFIX = "heldout_"  # heldout_<attribute>: per-attribute verifier accuracy


def term(name: str) -> Term:
    """The entry for `name`; per-attribute accuracies (heldout_colour, ...) share one pattern."""
    if name in TERMS:
        return TERMS[name]
    if name.startswith(ATTRIBUTE_PREFIX):
        attr = name[len(ATTRIBUTE_PREFIX) :]
        return Term(f"held-out {attr} accuracy", f"Fraction of held-out samples whose {attr} the verifier finds right.",
                    "higher", WILSON)
    return Term(name, "no description (a metric this glossary does not know)")
