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


def _switch(layer, disabled: bool) -> None:
    """peft's `enable_adapters` also walks the adapter's parameters to flip requires_grad; the forward only
    reads the flag, and a disabled adapter gets no gradient anyway, so set the flag alone when we can."""
    if isinstance(getattr(type(layer), "_disable_adapters", None), bool):
        layer.__dict__["_disable_adapters"] = disabled  # what nn.Module.__setattr__ ends in, without its checks
    else:
        layer.enable_adapters(not disabled)


class LoraToggle:
    """The LoRA layers of a module, found once. Switching them off and on then costs one flag per layer
    instead of a walk over every module (an SD1.5 UNet has ~2000 modules and 128 LoRA layers). Build it
    after the adapters are added; adapters added later are not seen."""

    def __init__(self, module: nn.Module):
        self.layers = _lora_layers(module)
        if not self.layers:
            raise ValueError("adapters_disabled: the module has no LoRA layers; use a frozen copy as reference")

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """The base model inside the block; each layer's previous state restored after, also on errors."""
        were_disabled = [layer.disable_adapters for layer in self.layers]
        try:
            for layer in self.layers:
                _switch(layer, True)
            yield
        finally:
            for layer, was in zip(self.layers, were_disabled):
                _switch(layer, was)


@contextmanager
def adapters_disabled(module: nn.Module) -> Iterator[nn.Module]:
    """Run `module` as its base model: every peft adapter layer is disabled inside the block and
    restored afterwards, also when the body raises. Works for diffusers' `add_adapter` and peft's
    `inject_adapter_in_model` alike, and through DDP wrappers (the layers are the same objects).
    Finds the layers on every call; hold a LoraToggle to switch often."""
    with LoraToggle(module).disabled():
        yield module


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
