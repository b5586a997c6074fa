"""An earlier run as the frozen reference policy (`model.reference: RUN_DIR`, e.g. an SFT run) instead of the base.

The reference network is rebuilt the way that run built its own model (its config.yaml, its train.seed: tiny
and toy models are seeded random initialisations), and its trainable weights are loaded from its newest
complete, finite checkpoint (checkpoints/step-N/weights.safetensors; the raw weights, not an EMA average).
A LoRA run's reference is its network with its LoRA switched on (base + that LoRA, not merged: the reference
errors are exactly that run's errors). Memory: one more copy of the denoiser in the run's weight dtype (a
LoRA run otherwise keeps none: SD1.5's UNet is ~1.7 GB in fp16). The policy still starts from `model.path`,
which may differ from that run's: a full fine-tune starts where the reference is with model.path=RUN_DIR/final
(its exported weights), so that policy = reference at step 0 as in SFT-then-DPO.

`check_reference_run` is torch-free (`genpref validate`); `load_reference` builds the network.
"""

from __future__ import annotations

from pathlib import Path

from genpref.config import Config, ConfigError, load_config
from genpref.needs import NEEDS

KEY = "'model.reference'"


def reference_config(cfg: Config) -> Config | None:
    """The earlier run's config, checked against this one; None when model.reference is not set.
    ConfigError naming model.reference and the file when the directory is missing, is not a run, or is
    another model."""
    ref = cfg.model.reference
    if ref is None:
        return None
    run_dir = Path(ref).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"{KEY}: {ref} does not exist (give an earlier run's train.output_dir)")
    if run_dir.resolve() == Path(cfg.train.output_dir).expanduser().resolve():
        raise ConfigError(f"{KEY}: {ref} is this run's own train.output_dir; name an earlier run")
    file = run_dir / "config.yaml"
    if not file.is_file():
        raise ConfigError(f"{KEY}: {file} not found: {ref} is not a genpref run directory")
    try:
        earlier = load_config(file)
    except ConfigError as err:
        raise ConfigError(f"{KEY}: {err}") from None
    if earlier.model.kind != cfg.model.kind:
        raise ConfigError(f"{KEY}: {file} has model.kind={earlier.model.kind!r} but this run has model.kind={cfg.model.kind!r}; "
                          "the reference must be a run of the same model")
    o = cfg.objective
    if not (NEEDS[o.name].reference or o.kl_weight > 0):
        raise ConfigError(f"{KEY} is set, but objective.name={o.name} uses no reference (unset it)")
    return earlier


def check_reference_run(cfg: Config) -> None:
    reference_config(cfg)


def load_reference(cfg: Config, device, weight_dtype):
    """The earlier run's denoiser with its trained weights, frozen, in eval mode and `weight_dtype`."""
    import torch
    from accelerate.utils import set_seed
    from safetensors.torch import load_file

    from genpref import build, checkpoint
    from genpref.errors import UserError
    from genpref.reference import unwrap
    from genpref.train_state import TrainableWeights

    earlier = reference_config(cfg)
    run_dir = Path(cfg.model.reference).expanduser()
    found = checkpoint.resolve_resume(run_dir, "latest", report=None)
    if found is None:
        raise UserError(f"{KEY}: {run_dir / 'checkpoints'} holds no complete, finite checkpoint to take the weights from "
                        "(rerun it with train.checkpoint_every > 0)")
    saved = checkpoint.rng_state()  # the earlier run's seeded initialisation must not move this run's generators
    try:
        set_seed(earlier.train.seed)  # as genpref.run.build_run does before building the model
        adapter = build.build_adapter(earlier, device, weight_dtype)
    finally:
        checkpoint.set_rng_state(saved)
    names = {id(p): n for n, p in adapter.denoiser.named_parameters()}
    weights = load_file(str(found / "weights.safetensors"))
    TrainableWeights({names[id(p)]: p for p in adapter.trainable_parameters()}).load_state_dict(weights, found)
    module = unwrap(adapter.denoiser)
    for m in module.modules():  # as the policy: dropout off, so e_θ and e_ref are comparable
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return module.to(dtype=weight_dtype).requires_grad_(False).eval()
