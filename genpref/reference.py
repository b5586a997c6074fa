"""The frozen reference model: LoRA adapters switched off for the duration of a block, or a frozen copy."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


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
