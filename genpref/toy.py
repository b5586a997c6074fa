"""A toy adapter for testing the core without image or motion code: 2-D points in four labelled clusters.

`model.kind: toy`. Prompts are "left", "right", "up", "down"; a sample is a point [2]. The denoiser is a
small MLP on (x_t, timestep, prompt); LoRA (`model.lora`, targets e.g. ["net.0", "net.2"]) or full
fine-tuning with a frozen copy. The reward is closeness to the prompt's cluster centre.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from genpref import sampling
from genpref.adapter import Batch
from genpref.reference import adapters_disabled, eval_mode, frozen_copy, lora_config

CENTRES = {"left": (-2.0, 0.0), "right": (2.0, 0.0), "up": (0.0, 2.0), "down": (0.0, -2.0)}
PROMPTS = list(CENTRES)


class ToyDenoiser(nn.Module):
    def __init__(self, hidden: int = 64, num_labels: int = len(PROMPTS)):
        super().__init__()
        self.label = nn.Embedding(num_labels, 16)
        self.net = nn.Sequential(nn.Linear(2 + 16 + 16, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))
        self.dropout = nn.Dropout(0.1)

    def forward(self, x_t: Tensor, t: Tensor, label: Tensor) -> Tensor:
        freqs = torch.exp(-math.log(1000.0) * torch.arange(8, device=x_t.device) / 8)
        angle = t.float()[:, None] * freqs[None]
        temb = torch.cat([angle.sin(), angle.cos()], dim=1)
        return self.net(self.dropout(torch.cat([x_t, temb, self.label(label)], dim=1)))


def toy_items(role: str, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        prompt = PROMPTS[i % len(PROMPTS)]
        good = np.array(CENTRES[prompt]) + 0.3 * rng.standard_normal(2)
        wrong = PROMPTS[(i + 1 + i // 4) % len(PROMPTS)]
        bad = np.array(CENTRES[wrong]) + 0.3 * rng.standard_normal(2)
        if role == "pairs":
            items.append({"prompt": prompt, "w": good, "l": bad, "label": 1.0})
        elif role == "ratings":
            items.append({"prompt": prompt, "x": good if i % 2 == 0 else bad, "rating": 1.0 if i % 2 == 0 else 0.0})
        elif role == "prompts":
            items.append({"prompt": prompt})
        else:
            items.append({"prompt": prompt, "x": good})
    return items


class ToyAdapter:
    def __init__(self, cfg, device, weight_dtype=torch.float32):
        from diffusers import DDPMScheduler

        self.cfg, self.device = cfg, torch.device(device)
        self.denoiser = ToyDenoiser().to(self.device)
        prediction = cfg.model.prediction_type or "epsilon"
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type=prediction)
        if cfg.model.path:
            from safetensors.torch import load_file

            self.denoiser.load_state_dict(load_file(cfg.model.path), strict=False)
        self.lora = cfg.model.lora is not None
        if self.lora:
            from peft import inject_adapter_in_model

            self.denoiser.requires_grad_(False)
            inject_adapter_in_model(lora_config(cfg.model.lora), self.denoiser)
            self.ref_denoiser = None
        else:
            self.ref_denoiser = frozen_copy(self.denoiser)
        self._use_ref = False

    # -- data
    def load_items(self, role: str) -> list[dict]:
        return toy_items(role, self.cfg.data.max_items or 256, seed=1234)

    def encode(self, samples, prompts) -> Batch:
        x0 = torch.tensor(np.stack([np.asarray(s, dtype=np.float32) for s in samples]), device=self.device)
        return Batch(x0, {"label": self._labels(prompts)}, None, list(prompts))

    def encode_prompts(self, prompts, like=None) -> Batch:
        return Batch(None, {"label": self._labels(prompts)}, None, list(prompts))

    def _labels(self, prompts) -> Tensor:
        return torch.tensor([PROMPTS.index(p) for p in prompts], device=self.device)

    # -- models
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.denoiser.parameters() if p.requires_grad]

    def predict(self, x_t: Tensor, t: Tensor, batch: Batch, guidance: float = 1.0) -> Tensor:
        if guidance != 1.0:
            raise ValueError("the toy model has no unconditional input: guidance must be 1")
        net = self.denoiser
        if self._use_ref and self.ref_denoiser is not None:
            net = self.ref_denoiser
        return net(x_t, t, batch.cond["label"])

    def use_reference(self, module: nn.Module) -> None:
        self.ref_denoiser = module  # replaces the frozen copy (full fine-tuning) or the LoRA-off base

    @contextmanager
    def reference(self):
        self._use_ref = True
        try:
            if self.lora and self.ref_denoiser is None:
                with adapters_disabled(self.denoiser):
                    yield
            else:
                yield
        finally:
            self._use_ref = False

    def make_solver(self, name: str):
        return sampling.make_solver(name, self.noise_scheduler.config)

    @torch.no_grad()
    def generate(self, batch, *, generator, num_steps, guidance=1.0, start_t=None, timestep_jitter=False, callback=None,
                 solver=None, eta=None, on_transition=None):
        """DDIM (the toy's sampler whatever online.solver says, unless `solver` names one) through the shared loop."""
        n = len(batch)
        noise = torch.randn(n, 2, generator=generator).to(self.device)
        timesteps = None
        if timestep_jitter:
            T = self.noise_scheduler.config.num_train_timesteps
            timesteps = sampling.jittered_timesteps(T, num_steps, sampling.random_offsets(T, num_steps, n, generator))
        tracks = sampling.plan(lambda: self.make_solver(solver or "ddim"), num_steps, n, self.device,
                               timesteps=timesteps, start_t=start_t)
        with eval_mode(self.denoiser):
            return sampling.sample(lambda x, t: self.predict(x, t.to(self.device), batch), tracks, noise, generator=generator,
                                   x0=batch.x0 if start_t is not None else None, eta=eta, callback=callback,
                                   on_transition=on_transition)

    def decode(self, x0: Tensor, batch: Batch) -> list[np.ndarray]:
        return [row for row in x0.detach().float().cpu().numpy()]

    def save_final(self, out_dir: str) -> None:
        from safetensors.torch import save_file

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.denoiser.state_dict().items()}
        save_file(state, str(Path(out_dir) / "toy.safetensors"))

    def save_samples(self, samples, prompts, out_dir, tag) -> list[str]:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        path = Path(out_dir) / f"{tag}.json"
        path.write_text(json.dumps([{"prompt": p, "point": np.asarray(s).tolist()} for s, p in zip(samples, prompts)]))
        return [str(path)]


class ToyReward:
    """exp(−distance to the prompt's centre): 1 on the centre, → 0 far away."""

    def score(self, samples, prompts) -> Tensor:
        d = [np.linalg.norm(np.asarray(s) - np.array(CENTRES[p])) for s, p in zip(samples, prompts)]
        return torch.tensor(np.exp(-np.array(d)), dtype=torch.float32)

    def similarity(self, a, b) -> Tensor:
        d = [np.linalg.norm(np.asarray(x) - np.asarray(y)) for x, y in zip(a, b)]
        return torch.tensor(np.exp(-np.array(d)), dtype=torch.float32)


def build_adapter(cfg, device, weight_dtype) -> ToyAdapter:
    return ToyAdapter(cfg, device, weight_dtype)


def build_reward(spec, cfg, device) -> ToyReward:
    return ToyReward()
