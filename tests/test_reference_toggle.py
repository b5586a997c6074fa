"""The LoRA reference toggle: the base model inside the block, each layer's previous state after it."""

import copy

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from genpref.reference import LoraToggle, adapters_disabled


def lora_mlp():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 3))
    model = inject_adapter_in_model(LoraConfig(r=2, target_modules=["0", "2"], init_lora_weights="gaussian"), copy.deepcopy(base))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()  # B = 0 would make the policy equal the base model
    return base, model


def test_toggle_runs_the_base_model_and_restores_each_layers_state():
    base, model = lora_mlp()
    toggle = LoraToggle(model)
    x = torch.randn(5, 4)
    policy = model(x)
    assert (policy - base(x)).abs().max() > 1e-3
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    with toggle.disabled():
        assert torch.equal(model(x), base(x))
    assert torch.equal(model(x), policy)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads

    toggle.layers[1].enable_adapters(False)  # a layer the user switched off stays off
    half = model(x)
    with pytest.raises(RuntimeError, match="boom"), toggle.disabled():
        raise RuntimeError("boom")
    assert [layer.disable_adapters for layer in toggle.layers] == [False, True]
    assert torch.equal(model(x), half)


def test_no_gradient_reaches_the_adapters_inside_the_block():
    _, model = lora_mlp()
    with adapters_disabled(model):
        model(torch.randn(5, 4, requires_grad=True)).sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" in n)


def test_a_module_without_lora_is_refused():
    with pytest.raises(ValueError, match="has no LoRA layers"):
        LoraToggle(nn.Linear(2, 2))
