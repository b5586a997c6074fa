"""The three published T2M evaluation protocols as data: which rows each replication generates, groups and scores.

Every published text-to-motion number runs the same evaluator and metric formulas, but the three reference
scripts feed them differently. `PROTOCOLS` names those choices and `plan_replication` turns one of them into
row counts and selections for a split of N items (pure numpy, no model), so tests can check them against
the original loops and `motion.evaluate` can follow them.

- "t2m": EricGuo5513/text-to-motion `final_evaluations.py`. The ground-truth loader (batch 32, shuffled,
  drop_last) is iterated twice per replication: once for R-precision / MM-Dist / Diversity of the real
  motions, once more inside `evaluate_fid` for the real FID statistics. `CompV6GeneratedDataset`
  (motion_loaders/comp_v6_model_dataset.py) generates one motion for EVERY item of its own shuffled pass
  (batch 1), and its loader (batch 32, drop_last, no shuffle) scores the first N // 32 · 32 of them in
  consecutive groups. MultiModality: 100 items of that pass (`np.random.choice(len(dataset), 100)`) get
  30 generations each. Padding seen by the evaluator: zeros (`__getitem__` and `MMGeneratedDataset` pad).
- "mdm": GuyTevet/motion-diffusion-model `eval/eval_humanml.py` (eval_mode wo_mm / mm_short). As "t2m",
  except that `CompMDMGeneratedDataset` (data_loaders/humanml/motion_loaders/comp_v6_model_dataset.py)
  generates whole batches of 32 of its own shuffled pass until `num_samples_limit` (1000) is reached —
  the check comes before each batch, so 32 batches, 1,024 motions — and MultiModality takes
  `mm_num_samples // 32 + 1` random BATCHES (4 batches = 128 texts) among `num_samples_limit // 32 + 1`.
  The model generates all `max_motion_length` (196) frames and the evaluator sees its output after each
  motion's length (padding "model"); the real motions are zero-padded.
- "mld": ChenFengYe/motion-latent-diffusion `test.py` + `mld/models/metrics/tm2t.py` (TM2TMetrics).
  One pass over the test set (shuffle=False, batch 32, no drop_last) gives each item a caption and a
  crop; the model generates for exactly those texts and lengths, so real and generated rows are pairs.
  `compute` applies one random permutation to all N rows, cuts groups of 32 for R-precision / MM-Dist
  (remainder dropped), and computes FID and Diversity on ALL N rows. MultiModality is a separate pass
  (`mm_mode`: 100 entries drawn without replacement, 30 generations each at the entry's drawn length).
  Padding: the VAE decoder zeroes frames after each length in the model's normalised space and
  `renorm4t2m` maps that to the evaluator's space (padding "model"; real motions likewise).

Not reproduced, on purpose: MDM feeds MultiModality motions to the evaluator in the MODEL's normalisation
(`MMGeneratedDataset` skips the re-normalisation `__getitem__` does), genpref uses the evaluator's
statistics everywhere; T2M's generated lengths come from its length estimator, genpref uses the drawn
ground-truth lengths (the other two papers do the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genpref.errors import UserError

GROUP = 32  # R-precision group size = the reference batch size ("must be 32" in MDM's eval script)
PADDINGS = ("model", "zero")


@dataclass(frozen=True)
class Protocol:
    name: str
    padding: str  # what the evaluator sees after each generated motion's length: "model" output or "zero"
    samples_limit: int | None  # generated rows per replication stop at the first batch reaching this (MDM)
    paired: bool  # generated rows reuse the real pass's texts and lengths (MLD) instead of a pass of their own
    fid_real_pass: bool  # real FID statistics from a second real pass (T2M/MDM `evaluate_fid`)
    all_rows_for_fid: bool  # FID / Diversity on every row (MLD) rather than the complete groups only
    permute_groups: bool  # one random permutation of the rows before grouping (MLD)
    mm_selection: str  # "items" (T2M), "batches" (MDM), "entries" (MLD)


PROTOCOLS = {
    "t2m": Protocol("t2m", "zero", None, False, True, False, False, "items"),
    "mdm": Protocol("mdm", "model", 1000, False, True, False, False, "batches"),
    "mld": Protocol("mld", "model", None, True, False, True, True, "entries"),
}
FAMILY_CONVENTION = {"mdm": "mdm", "mld": "mld"}  # model family -> the protocol its paper reports


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise UserError(f"eval.convention must be one of {tuple(PROTOCOLS)}, got {name!r}")
    return PROTOCOLS[name]


def check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise UserError(f"eval.padding must be one of {PADDINGS}, got {padding!r}")
    return padding


@dataclass
class ReplicationPlan:
    """Row counts and selections of one replication over a split of `items` entries.

    real_rows: rows of the real pass scored (R-precision, MM-Dist, Diversity of the real motions).
    gen_rows: generated rows scored (R-precision, MM-Dist, FID, Diversity): rows [0, gen_rows) of the
        generation pass, which is the real pass itself when the protocol is paired.
    gen_pass_rows: rows the generation pass runs through (T2M generates every item, scores complete groups).
    fid_real_rows: rows whose statistics are FID's real side (of the second real pass when fid_real_pass).
    mm_rows: rows of the generation pass used for MultiModality (T2M / MDM), or None.
    mm_entries: entry indices of the split drawn for MLD's separate MultiModality pass, or None.
    Groups of 32 for R-precision / MM-Dist: `metrics.grouped_rows(rows, 32, protocol.name, rng)`.
    """

    real_rows: int
    gen_rows: int
    gen_pass_rows: int
    fid_real_rows: int
    mm_rows: np.ndarray | None = None
    mm_entries: np.ndarray | None = None


def plan_replication(protocol: Protocol, items: int, rng: np.random.Generator | None = None, *, group: int = GROUP,
                     samples_limit: int | None = None, mm_texts: int = 0) -> ReplicationPlan:  # fmt: skip
    """What one replication of `protocol` scores for a split of `items` entries; `rng` draws the
    MultiModality selection. `samples_limit` overrides the protocol's (MDM: 1000; 0 = no limit)."""
    complete = items // group * group
    if complete == 0:
        raise UserError(f"the T2M protocol needs at least one group of {group} items, the split has {items}")
    limit = protocol.samples_limit if samples_limit is None else (samples_limit or None)
    if protocol.paired:  # MLD: one pass, every row
        real_rows = gen_rows = gen_pass_rows = fid_real_rows = items
    else:  # drop_last loaders; the generated loop stops at the first batch that reaches the limit
        real_rows = fid_real_rows = complete
        batches = complete // group if limit is None else min(complete // group, -(-limit // group))
        gen_rows = batches * group
        gen_pass_rows = items if limit is None else gen_rows
    plan = ReplicationPlan(real_rows, gen_rows, gen_pass_rows, fid_real_rows)
    if not mm_texts:
        return plan
    if mm_texts >= items:  # the references assert mm_num_samples < len(dataset)
        raise UserError(f"MultiModality needs fewer texts than the split's {items} items, got {mm_texts}")
    rng = np.random.default_rng() if rng is None else rng
    if protocol.mm_selection == "items":  # sorted choice over every generated item
        plan.mm_rows = np.sort(rng.choice(gen_pass_rows, mm_texts, replace=False))
    elif protocol.mm_selection == "batches":  # mm_texts // 32 + 1 whole batches among (limit // 32 + 1)
        candidates = gen_rows // group if limit is None else limit // group + 1
        chosen = np.sort(rng.choice(candidates, min(mm_texts // group + 1, candidates), replace=False))
        chosen = chosen[chosen < gen_rows // group]  # a batch after the last generated one never runs
        plan.mm_rows = (chosen[:, None] * group + np.arange(group)).reshape(-1)
    else:
        plan.mm_entries = rng.choice(items, mm_texts, replace=False)
    return plan
