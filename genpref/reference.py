"""The policy and its frozen reference: the one LoRA builder (peft, from `model.lora`), LoRA adapters switched off
for the duration of a block, or a frozen copy; the model inside training wrappers; eval mode for sampling."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def lora_config(lora, targets: list[str] | None = None):
    """peft's LoraConfig from the `model.lora` section (targets: the adapter's own module names when the
    config's default image targets do not exist in its network)."""
    from peft import LoraConfig

    from genpref.errors import UserError

    init = {"default": True, "gaussian": "gaussian"}.get(lora.init_weights)
    if init is None:
        raise UserError(f"model.lora.init_weights: {lora.init_weights!r}; valid: default, gaussian")
    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=list(targets or lora.targets),
                      lora_dropout=lora.dropout, init_lora_weights=init)


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside DDP / DeepSpeed / torch.compile wrappers (accelerate's own unwrapping)."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(module)


def _lora_layers(module: nn.Module) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def has_lora(module: nn.Module) -> bool:
    return bool(_lora_layers(module))


@contextmanager
def adapters_disabled(module: nn.Module) -> Iterator[nn.Module]:
    """Run `module` as its base model: every peft adapter layer is disabled inside the block and
    restored afterwards, also when the body raises. Works for diffusers' `add_adapter` and peft's
    `inject_adapter_in_model` alike, and through DDP wrappers (the layers are the same objects)."""
    layers = _lora_layers(module)
    if not layers:
        raise ValueError("adapters_disabled: the module has no LoRA layers; use a frozen copy as reference")
    were_enabled = [not layer.disable_adapters for layer in layers]
    try:
        for layer in layers:
            layer.enable_adapters(False)
        yield module
    finally:
        for layer, enabled in zip(layers, were_enabled):
            layer.enable_adapters(enabled)


def frozen_copy(module: nn.Module, dtype=None) -> nn.Module:
    """A deep copy in eval mode with gradients off: the reference for full fine-tuning."""
    ref = copy.deepcopy(module)
    if dtype is not None:
        ref.to(dtype=dtype)
    ref.requires_grad_(False)
    return ref.eval()


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """`module` in eval mode for the block (sampling: no dropout), its previous mode restored afterwards."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)
