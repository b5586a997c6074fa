"""GPU readiness check: genpref's training step on an SD1.5-shaped UNet (random weights, built from the
published config, nothing downloaded) at 512 px, across the precision and speed switches, in one table.

    python benchmarks/gpu_check.py                        # CUDA, SD1.5 shape, 512 px (< 5 minutes on one modern GPU)
    python benchmarks/gpu_check.py --device cpu --size tiny --steps 2   # the test suite's smoke run

Rows: the LoRA Diffusion-DPO step and the Diffusion-DRO step in bf16 and fp16; SDPA against xformers (when
installed); gradient checkpointing; torch.compile (CUDA only); one MDM-sized motion DRO step (full weights). Every step is genpref's own path: ImageAdapter (frozen UNet in
the half dtype, LoRA in fp32, the reference = LoRA switched off), `branch_errors`, the objective, autocast and,
for fp16, a gradient scaler. Columns: seconds per step, pairs per second, peak GPU memory, and the first
step's loss next to the fp32 loss on the same weights and batch, with the largest relative difference of the
per-sample denoising errors (the loss itself amplifies error noise by β). `ok` = that difference is within
the dtype's tolerance and the loss is finite.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# unet/config.json of Stable Diffusion 1.5 (the keys that shape the network; the rest are diffusers' defaults)
SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32, "act_fn": "silu",
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "mid_block_scale_factor": 1, "norm_eps": 1e-5,
}
TINY_UNET = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1, "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32, "attention_head_dim": 8, "norm_num_groups": 32,
}
# MDM as released for HumanML3D: 263 features, 196 frames, 8 layers of width 512, CLIP ViT-B/32 text (512)
MDM_SIZE = {"njoints": 263, "nfeats": 1, "latent_dim": 512, "ff_size": 1024, "num_layers": 8, "num_heads": 4, "clip_dim": 512}
TINY_MDM = {"njoints": 263, "nfeats": 1, "latent_dim": 32, "ff_size": 64, "num_layers": 1, "num_heads": 4, "clip_dim": 32}

# latent side, text tokens, pairs per step; motion frames and pairs per step
SIZES = {
    "sd15": {"unet": SD15_UNET, "side": 64, "tokens": 77, "pairs": 4, "mdm": MDM_SIZE, "frames": 196, "motion_pairs": 32},
    "tiny": {"unet": TINY_UNET, "side": 8, "tokens": 4, "pairs": 1, "mdm": TINY_MDM, "frames": 16, "motion_pairs": 2},
}
TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2, "fp16": 1e-2}  # largest relative difference of e_θ / e_ref to fp32
BETA = 5000.0  # DPO's published β (SD1.5, with the 0.5 form)


@dataclass(frozen=True)
class Case:
    objective: str = "dpo"  # dpo | dro
    dtype: str = "bf16"  # fp32 | bf16 | fp16: frozen weights and autocast
    attention: str = "sdpa"  # sdpa | xformers
    checkpointing: bool = False
    compile: bool = False

    @property
    def name(self) -> str:
        extras = [self.attention] + ["checkpointing"] * self.checkpointing + ["compile"] * self.compile
        return f"{self.objective} {self.dtype} {'+'.join(extras)}"


CASES = [
    Case("dpo", "bf16"), Case("dpo", "fp16"), Case("dro", "bf16"), Case("dro", "fp16"),
    Case("dpo", "bf16", attention="xformers"), Case("dpo", "bf16", checkpointing=True),
    Case("dpo", "bf16", compile=True),
]


def dtype_of(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def image_adapter(base_unet, case: Case, size: dict, device, out_dir: str):
    """genpref's ImageAdapter around a copy of the random base UNet; the LoRA weights are seeded and non-zero,
    so the policy differs from the reference and every case starts from the same weights."""
    import torch

    from genpref.config import from_dict
    from image.adapter import ImageAdapter
    from image.models import Components, quiet, training_scheduler

    cfg = from_dict({
        "model": {"kind": "sd15", "attention": case.attention, "gradient_checkpointing": case.checkpointing,
                  "lora": {"rank": 8, "alpha": 8}},
        "data": {"resolution": size["side"]},  # no VAE: the UNet sees latents of this side directly
        "objective": {"name": case.objective},
        "train": {"output_dir": out_dir},
    })
    components = Components("sd", copy.deepcopy(base_unet), None, [], [], training_scheduler(), "random SD1.5-shaped")
    with quiet():
        adapter = ImageAdapter(components, cfg, device, dtype_of(case.dtype))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in sorted(adapter.denoiser.named_parameters()):
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    if case.compile:
        adapter.denoiser = torch.compile(adapter.denoiser)
    return adapter, cfg


def image_branches(adapter, size: dict, device):
    """One fixed batch of winner/loser latents sharing t and ε, and random text states."""
    import torch

    from genpref.adapter import Batch
    from genpref.noising import noised_branch

    g = torch.Generator().manual_seed(0)
    b, side = size["pairs"], size["side"]
    cond = {"encoder_hidden_states": torch.randn(b, size["tokens"], adapter.components.unet.config.cross_attention_dim, generator=g)}
    latents = [torch.randn(b, 4, side, side, generator=g) for _ in range(2)]
    t = torch.randint(0, 1000, (b,), generator=g)
    eps = torch.randn(b, 4, side, side, generator=g)
    move = lambda v: v.to(device)
    batches = [Batch(move(x0), {k: move(v) for k, v in cond.items()}) for x0 in latents]
    sched = adapter.noise_scheduler
    return {name: noised_branch(sched, batch, move(t), move(eps)) for name, batch in zip(("w", "l"), batches)}


def train_steps(step, params, case: Case, device, steps: int, warmup: int) -> dict:
    """Run warm-up + timed optimizer steps of `step() -> (loss, err, ref)`; the first step's numbers are kept."""
    import torch

    optimizer = torch.optim.AdamW(params, lr=1e-5)
    scaler = torch.amp.GradScaler(device.type) if case.dtype == "fp16" else None
    first = None
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype_of(case.dtype), enabled=case.dtype != "fp32"):
            loss, err, ref = step()
        if first is None:
            first = {"loss": loss.item(), "err": {k: v.detach().float().cpu() for k, v in {**err, **{f"ref_{k}": r for k, r in ref.items()}}.items()}}
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {**first, "s_per_step": seconds, "peak_gib": peak}


def run_image(base_unet, case: Case, size: dict, device, steps: int, warmup: int, out_dir: str) -> dict:
    from genpref.config import ObjectiveConfig
    from genpref.forward import branch_errors
    from genpref.objectives import build_objective

    adapter, _ = image_adapter(base_unet, case, size, device, out_dir)
    branches = image_branches(adapter, size, device)
    objective = build_objective(ObjectiveConfig(name=case.objective, beta=BETA if case.objective == "dpo" else None))

    def step():
        err, ref = branch_errors(adapter, branches, True)
        loss_vec, _ = objective(err, ref, {})
        return loss_vec.float().mean(), err, ref

    row = train_steps(step, adapter.trainable_parameters(), case, device, steps, 1 if case.compile else warmup)
    return {**row, "pairs": size["pairs"]}


def run_motion(size: dict, dtype: str, device, steps: int, warmup: int) -> dict:
    """A full-weight MDM DRO step: policy forward + backward and a frozen copy's forward on expert and rollout
    states, 196-frame masks, x0 prediction."""
    import torch

    from genpref.losses import denoising_error, diffusion_dro
    from genpref.reference import frozen_copy
    from motion.mdm import MDM

    torch.manual_seed(0)
    policy = MDM(**size["mdm"], mask_frames=True, dropout=0.0).to(device)
    policy.train_cond_drop = False
    reference = frozen_copy(policy, dtype=dtype_of(dtype))
    g = torch.Generator().manual_seed(0)
    b, frames = 2 * size["motion_pairs"], size["frames"]
    x0 = torch.randn(b, size["mdm"]["njoints"], 1, frames, generator=g).to(device)
    lengths = torch.randint(frames // 2, frames + 1, (b,), generator=g)
    mask = (torch.arange(frames)[None] < lengths[:, None]).reshape(b, 1, 1, frames).to(device)
    text = torch.randn(b, size["mdm"]["clip_dim"], generator=g).to(device)
    t = torch.randint(0, 1000, (b,), generator=g).to(device)
    x_t = x0 + torch.randn(x0.shape, generator=g).to(device)

    def step():
        with torch.no_grad():
            ref = denoising_error(reference(x_t, t, text, mask), x0, mask)
        err = denoising_error(policy(x_t, t, text, mask), x0, mask)
        e_w, e_l = err.chunk(2)
        r_w, r_l = ref.chunk(2)
        return diffusion_dro(e_w, e_l, r_w, r_l).mean(), {"w": e_w, "l": e_l}, {"w": r_w, "l": r_l}

    case = Case("dro", dtype)
    row = train_steps(step, list(policy.parameters()), case, device, steps, warmup)
    return {**row, "pairs": size["motion_pairs"]}


def compare(row: dict, fp32: dict, dtype: str) -> dict:
    """Largest relative difference of the per-sample errors against fp32, and the verdict."""
    rel = max(float(((row["err"][k] - fp32["err"][k]).abs() / fp32["err"][k].abs().clamp_min(1e-12)).max()) for k in fp32["err"])
    return {"loss_fp32": fp32["loss"], "err_rel": rel, "ok": math.isfinite(row["loss"]) and rel <= TOLERANCE[dtype]}


def skip_reason(case: Case, device) -> str | None:
    if case.attention == "xformers":
        from diffusers.utils import is_xformers_available

        if device.type != "cuda":
            return "xformers needs CUDA"
        if not is_xformers_available():
            return "xformers not installed"
    if case.compile and device.type != "cuda":
        return "compile is checked on CUDA (tracing alone takes ~20 s on a CPU)"
    return None


def run(device_name: str, size_name: str, steps: int, warmup: int, only: str | None = None) -> list[dict]:
    import torch
    from diffusers import UNet2DConditionModel

    device = torch.device(device_name)
    size = SIZES[size_name]
    rows = []
    with tempfile.TemporaryDirectory(prefix="genpref-gpu-check-") as out_dir:
        torch.manual_seed(0)
        with torch.device(device):
            base = UNet2DConditionModel(**size["unet"])  # random weights: the shape is what is measured
        cases = [c for c in CASES if only is None or only in c.name]
        references = {}
        for objective in sorted({c.objective for c in cases}):
            references[objective] = run_image(base, Case(objective, "fp32"), size, device, 1, 0, out_dir)
        for case in cases:
            reason = skip_reason(case, device)
            if reason:
                rows.append({"case": case.name, "skipped": reason})
                continue
            start = time.perf_counter()
            row = run_image(base, case, size, device, steps, warmup, out_dir)
            rows.append({"case": case.name, **row, **compare(row, references[case.objective], case.dtype),
                         "wall_s": time.perf_counter() - start})
            if device.type == "cuda":
                torch.cuda.empty_cache()
        del base
        if only is None or "motion" in only:
            motion_fp32 = run_motion(size, "fp32", device, 1, 0)
            motion = run_motion(size, "bf16", device, steps, warmup)
            rows.append({"case": "motion mdm dro bf16", **motion, **compare(motion, motion_fp32, "bf16"), "wall_s": 0.0})
    return rows


def table(rows: list[dict], header: str) -> str:
    lines = [header, "", "| case | s/step | pairs/s | peak GiB | loss | loss fp32 | max rel Δ err | ok |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['case']} | – | – | – | – | – | – | skipped: {r['skipped']} |")
            continue
        peak = "–" if math.isnan(r["peak_gib"]) else f"{r['peak_gib']:.2f}"
        lines.append(f"| {r['case']} | {r['s_per_step']:.4f} | {r['pairs'] / r['s_per_step']:.1f} | {peak} | "
                     f"{r['loss']:.4f} | {r['loss_fp32']:.4f} | {r['err_rel']:.1e} | {'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda | cpu")
    parser.add_argument("--size", default="sd15", choices=sorted(SIZES), help="sd15: SD1.5 shape at 512 px; tiny: smoke test")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile cases: 1, compiling)")
    parser.add_argument("--only", help="run the cases whose name contains this text (e.g. 'dpo bf16', 'motion')")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; use --device cpu --size tiny for the smoke run")
    start = time.perf_counter()
    rows = run(args.device, args.size, args.steps, args.warmup, args.only)
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    header = (f"gpu_check: {card}, size {args.size} ({SIZES[args.size]['side'] * 8} px images), torch {torch.__version__}, "
              f"{args.steps} timed steps per case, total {time.perf_counter() - start:.0f} s")
    print(table(rows, header))
    if args.json:
        clean = [{k: v for k, v in r.items() if k != "err"} for r in rows]
        Path(args.json).write_text(json.dumps(clean, indent=1))
    return rows


if __name__ == "__main__":
    main()
