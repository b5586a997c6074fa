"""A Diffusion-DPO training step against its compute floor and against diffusers' DPO training script as it
really runs, on the same tiny SD weights and Pick-a-Pic-format parquet, in one run:

    python benchmarks/image_step.py                    # 64 and 128 px, 2 repeats
    python benchmarks/image_step.py --resolutions 64 --repeats 1

floor     the UNet work alone on tensors already in memory: reference forward (LoRA off) + policy forward
          + backward on the 2B concatenated winners and losers. Every other row is divided by it.
script    a re-implementation (our code) of examples/research_projects/diffusion_dpo/train_diffusion_dpo.py's
          loop as it runs: a DataLoader decoding both JPEGs and applying the torchvision transforms (random
          flip on, its default), tokenising the caption; every step the VAE encodes both images
          (latent_dist.sample()) and the text encoder the captions; unet.disable_adapters() /
          enable_adapters() around the reference forward; clip_grad_norm_, optimizer and LR scheduler steps,
          four .item() logs, the progress bar and accelerate's TensorBoard tracker.
genpref   `genpref.train.train` itself (the real loop: logging, guards, TensorBoard), with the live
          reference or with train.precompute_reference. cold = first epoch of a fresh cache (each image
          encoded at its first use); warm = later epochs (latents cached). With the precomputed reference,
          s/step is the steady step and "+pass" adds the per-epoch reference pass spread over the epoch's
          steps (each epoch draws new (t, ε), so every epoch has a pass).

Each (variant, resolution) runs in its own process, which also measures its own floor (step ÷ floor is
therefore taken under the same machine load); repeats alternate the variants and the minimum is reported.
s/step is the median over the steps of a run, in CPU seconds of the process on a CPU (steady on a shared
machine; wall seconds on CUDA). Peak memory: the process's peak resident set minus its resident set before
any model was built (CPU), or CUDA max_memory_allocated.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("script", "genpref-live", "genpref-precomputed")
RANK = 8  # LoRA rank of the README's SD command
BETA = 5000.0  # genpref's 0.5·β form; the script's beta_dpo = β/2 = 2500 is the same loss
LR = 1e-5


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# CPU seconds of this process on a CPU (steady on a machine shared with other work), wall seconds on CUDA
clock = time.process_time


def genpref_config(args, out_dir: str, precompute: bool, steps: int):
    from genpref.config import from_dict

    return from_dict({
        "model": {"kind": "tiny-sd", "size": args.size, "lora": {"rank": RANK, "alpha": RANK}},
        "data": {"pairs": args.pairs, "resolution": args.resolution, "cache_dir": str(Path(out_dir) / "cache")},
        "objective": {"name": "dpo", "beta": BETA},
        "train": {"output_dir": out_dir, "batch_size": args.batch, "max_steps": steps, "lr": LR, "checkpoint_every": 0,
                  "precompute_reference": precompute, "seed": 0},
    })


# ---------------------------------------------------------------------------------------------- the floor


def measure_floor(args, device, repeats: int = 3) -> float:
    """Median seconds of reference forward + policy forward + backward on a fixed in-memory batch."""
    import torch
    import torch.nn.functional as F

    from genpref.reference import LoraToggle
    from image.adapter import build_adapter

    with tempfile.TemporaryDirectory() as tmp:
        adapter = build_adapter(genpref_config(args, tmp, False, 1), device, torch.float32)
    unet, params = adapter.denoiser, adapter.trainable_parameters()
    toggle = LoraToggle(unet)
    g = torch.Generator().manual_seed(0)
    n, side = 2 * args.batch, args.resolution // adapter.codec.factor
    x_t = torch.randn(n, 4, side, side, generator=g).to(device)
    target = torch.randn(n, 4, side, side, generator=g).to(device)
    t = torch.randint(0, 1000, (n,), generator=g).to(device)
    text = torch.randn(n, 77, unet.config.cross_attention_dim, generator=g).to(device)
    times = []
    for _ in range(2 + repeats):
        sync(device)
        start = clock()
        with torch.no_grad(), toggle.disabled():
            unet(x_t, t, encoder_hidden_states=text)
        F.mse_loss(unet(x_t, t, encoder_hidden_states=text).sample, target).backward()
        sync(device)
        times.append(clock() - start)
        for p in params:
            p.grad = None
    del adapter
    return statistics.median(times[2:])


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------- genpref


def run_genpref(args, device, precompute: bool) -> dict:
    """genpref.train.train over `epochs` epochs; per-step wall times from one metrics row to the next."""
    from genpref import precompute as pre
    from genpref import rundir
    from genpref.train import train

    stamps, passes = [], []
    log = rundir.MetricsLog.log

    def stamped(self, step, values):
        stamps.append(clock())
        log(self, step, values)

    ensure = pre.PrecomputedReference._ensure

    def timed(self, epoch):
        start = clock()
        computed = self.computed_batches
        ensure(self, epoch)
        if self.computed_batches > computed:
            passes.append((len(stamps) + 1, clock() - start))  # (step it ran in, seconds)

    rundir.MetricsLog.log, pre.PrecomputedReference._ensure = stamped, timed
    steps_per_epoch = args.items // args.batch
    with tempfile.TemporaryDirectory(prefix="genpref-bench-") as out:
        cfg = genpref_config(args, out, precompute, steps_per_epoch * args.epochs)
        train(cfg)
    # step k's time: stamp k − stamp k−1 (the first step has no predecessor and is left out)
    pass_steps = {s for s, _ in passes}
    times = {k + 1: stamps[k] - stamps[k - 1] for k in range(1, len(stamps))}
    cold = [v for k, v in times.items() if k <= steps_per_epoch and k not in pass_steps]
    warm = [v for k, v in times.items() if k > steps_per_epoch and k not in pass_steps]
    warm_passes = [s for k, s in passes if k > steps_per_epoch]
    return {
        "cold": statistics.median(cold), "warm": statistics.median(warm),
        "pass_cold": passes[0][1] if passes else 0.0,
        "pass_warm": statistics.mean(warm_passes) if warm_passes else 0.0,
        "steps_per_epoch": steps_per_epoch,
    }


# ---------------------------------------------------------------------------------------------- the script


def script_models(out: str, args, model_dir: str | None):
    """The script's models: from_pretrained from a diffusers directory as it loads them, or the same tiny
    random weights genpref builds (the step benchmark, which does not time loading)."""
    if model_dir is None:
        from image.models import build_tiny

        c = build_tiny("sd", args.size, tokenizer_dir=Path(out) / "tokenizer")
        return c.unet, c.vae, c.text_encoders[0], c.tokenizers[0], c.scheduler
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel, PretrainedConfig

    tokenizer = AutoTokenizer.from_pretrained(model_dir, subfolder="tokenizer", use_fast=False)
    architecture = PretrainedConfig.from_pretrained(model_dir, subfolder="text_encoder").architectures[0]
    assert architecture == "CLIPTextModel", architecture  # its import_model_class_from_model_name_or_path
    scheduler = DDPMScheduler.from_pretrained(model_dir, subfolder="scheduler")
    text_encoder = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(model_dir, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    return unet, vae, text_encoder, tokenizer, scheduler


def run_script(args, device, model_dir: str | None = None, after_step=None) -> dict:
    """The diffusers DPO script's training loop, re-written step for step (see the module docstring).
    `after_step(k)` is called after each step (the start-up benchmark marks the first)."""
    import io

    import pyarrow.parquet as pq
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from diffusers.optimization import get_scheduler
    from peft import LoraConfig
    from PIL import Image
    from torchvision import transforms
    from tqdm.auto import tqdm

    out = tempfile.mkdtemp(prefix="genpref-bench-script-")
    accelerator = Accelerator(mixed_precision="no", log_with="tensorboard",
                              project_config=ProjectConfiguration(project_dir=out, logging_dir=str(Path(out) / "logs")))
    torch.manual_seed(0)
    unet, vae, text_encoder, tokenizer, noise_scheduler = script_models(out, args, model_dir)
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False).to(device)
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)

    table = pq.read_table(args.pairs).to_pylist()
    train_transforms = transforms.Compose([
        transforms.Resize(args.resolution, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(args.resolution), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize([0.5], [0.5]),
    ])

    class Pairs(torch.utils.data.Dataset):  # what datasets' with_transform(preprocess_train) yields per row
        def __len__(self):
            return len(table)

        def __getitem__(self, i):
            row = table[i]
            ims = [train_transforms(Image.open(io.BytesIO(row[k])).convert("RGB")) for k in ("jpg_0", "jpg_1")]
            if row["label_0"] == 0:
                ims = ims[::-1]
            ids = tokenizer([row["caption"]], truncation=True, padding="max_length",
                            max_length=tokenizer.model_max_length, return_tensors="pt").input_ids[0]
            return {"pixel_values": torch.cat(ims, dim=0), "input_ids": ids}

    def collate(examples):
        return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]).float(),
                "input_ids": torch.stack([e["input_ids"] for e in examples])}

    loader = torch.utils.data.DataLoader(Pairs(), batch_size=args.batch, shuffle=True, collate_fn=collate, num_workers=0,
                                         drop_last=True)
    steps = len(loader) * args.epochs
    lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0, num_training_steps=steps)
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    accelerator.init_trackers("diffusion-dpo-lora", config={"resolution": args.resolution})
    bar = tqdm(range(steps), disable=not accelerator.is_local_main_process)
    stamps = []
    unet.train()
    for _ in range(args.epochs):
        for batch in loader:
            with accelerator.accumulate(unet):
                pixels = batch["pixel_values"]
                feed = torch.cat(pixels.chunk(2, dim=1))
                latents = torch.cat([vae.encode(feed[i:i + 8]).latent_dist.sample() for i in range(0, feed.shape[0], 8)])  # its vae_encode_batch_size
                latents = latents * vae.config.scaling_factor
                noise = torch.randn_like(latents).chunk(2)[0].repeat(2, 1, 1, 1)
                bsz = latents.shape[0] // 2
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device).repeat(2)
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                with torch.no_grad():
                    text = text_encoder(batch["input_ids"].to(device))[0].repeat(2, 1, 1)
                pred = unet(noisy, timesteps, text).sample
                losses = F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=[1, 2, 3])
                losses_w, losses_l = losses.chunk(2)
                raw_model_loss = 0.5 * (losses_w.mean() + losses_l.mean())
                model_diff = losses_w - losses_l
                accelerator.unwrap_model(unet).disable_adapters()
                with torch.no_grad():
                    ref = unet(noisy, timesteps, text).sample.detach()
                    ref_loss = F.mse_loss(ref.float(), noise.float(), reduction="none").mean(dim=[1, 2, 3])
                    ref_w, ref_l = ref_loss.chunk(2)
                    ref_diff = ref_w - ref_l
                    raw_ref_loss = ref_loss.mean()
                accelerator.unwrap_model(unet).enable_adapters()
                logits = ref_diff - model_diff
                loss = -F.logsigmoid(BETA / 2 * logits).mean()
                implicit_acc = (logits > 0).sum().float() / logits.size(0) + 0.5 * (logits == 0).sum().float() / logits.size(0)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            bar.update(1)
            logs = {"loss": loss.detach().item(), "raw_model_loss": raw_model_loss.detach().item(),
                    "ref_loss": raw_ref_loss.detach().item(), "implicit_acc": implicit_acc.detach().item(),
                    "lr": lr_scheduler.get_last_lr()[0]}
            bar.set_postfix(**logs)
            accelerator.log(logs, step=len(stamps) + 1)
            stamps.append(clock())
            if after_step is not None:
                after_step(len(stamps))
    accelerator.end_training()
    times = [stamps[k] - stamps[k - 1] for k in range(1, len(stamps))]
    return {"cold": statistics.median(times), "warm": statistics.median(times), "pass_cold": 0.0, "pass_warm": 0.0,
            "steps_per_epoch": len(loader)}


# ---------------------------------------------------------------------------------------------- driver


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    import diffusers  # noqa: F401  (library code is not step memory)
    import transformers  # noqa: F401

    torch.nn.functional.conv2d(torch.randn(1, 4, 8, 8), torch.randn(4, 4, 3, 3))  # CPU kernels initialised
    global clock
    if device.type == "cuda":
        clock = time.perf_counter
        torch.cuda.reset_peak_memory_stats()
    base = rss_bytes()
    result = run_script(args, device) if args.variant == "script" else run_genpref(args, device, args.variant == "genpref-precomputed")
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_rss_bytes() - base
    floor = measure_floor(args, device)  # after the run: its model does not count in the peak
    return {**result, "floor": floor, "peak_bytes": peak, "device": str(device)}


def run_variant(variant: str, resolution: int, args) -> dict:
    cmd = [sys.executable, __file__, "--variant", variant, "--resolution", str(resolution), "--pairs", args.pairs,
           "--size", args.size, "--batch", str(args.batch), "--epochs", str(args.epochs), "--items", str(args.items),
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"{variant} at {resolution} px failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rows_for(runs: list[dict], variant: str, batch: int) -> list[tuple]:
    """(name, s/step, peak, ratio) rows of one variant: minimum over repeats."""
    best = lambda key: min(r[key] for r in runs)
    ratio = lambda key: min(r[key] / r["floor"] for r in runs)
    amortised = lambda phase: min((r[phase] + r[f"pass_{phase}"] / r["steps_per_epoch"]) / r["floor"] for r in runs)
    peak = min(r["peak_bytes"] for r in runs)
    if variant == "script":
        return [("diffusers script (re-implemented)", best("warm"), peak, ratio("warm"))]
    rows = []
    for phase in ("cold", "warm"):
        name = f"genpref {variant.split('-')[1]} reference, {phase} cache"
        rows.append((name, best(phase), peak, ratio(phase)))
        if variant == "genpref-precomputed":
            s = min(r[phase] + r[f"pass_{phase}"] / r["steps_per_epoch"] for r in runs)
            rows.append(("  + its per-epoch reference pass, spread", s, peak, amortised(phase)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="default", help="tiny model preset: default | small")
    parser.add_argument("--resolutions", default="64,128", help="image sides, comma-separated")
    parser.add_argument("--batch", type=int, default=2, help="pairs per step")
    parser.add_argument("--items", type=int, default=8, help="pairs in the parquet (an epoch = items / batch steps)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (the first is the cold-cache one)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each variant; minimum reported")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pairs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(worker(args)))
        return
    from image.tasks.tiny_data import write_pairs

    print(f"tiny-sd ({args.size}), LoRA rank {RANK}, batch {args.batch} pairs, {args.items} pairs, {args.epochs} epochs "
          f"per run, {args.repeats} repeats (minimum), {args.threads} thread(s)")
    with tempfile.TemporaryDirectory(prefix="genpref-bench-data-") as tmp:
        for resolution in [int(r) for r in args.resolutions.split(",")]:
            # Pick-a-Pic's images are larger than the training side: decode + resize are part of the work
            args.pairs = str(write_pairs(Path(tmp) / f"pairs-{resolution}.parquet", n=args.items, size=2 * resolution, ties=0))
            runs = {v: [] for v in VARIANTS}
            for _ in range(args.repeats):  # alternate, so a busy machine slows every variant alike
                for v in VARIANTS:
                    runs[v].append(run_variant(v, resolution, args))
            floor = min(r["floor"] for rs in runs.values() for r in rs)
            device = runs["script"][0]["device"]
            unit = "MiB GPU" if device.startswith("cuda") else "MiB RSS"
            clock_name = "s" if device.startswith("cuda") else "CPU-s"
            print(f"\n{resolution} px ({device}); floor = reference forward + policy forward + backward = {floor:.4f} {clock_name}")
            print(f"| step | {clock_name}/step | pairs/{clock_name} | peak {unit} | step ÷ floor |\n|---|---:|---:|---:|---:|")
            for v in VARIANTS:
                for name, s, peak, ratio in rows_for(runs[v], v, args.batch):
                    print(f"| {name} | {s:.4f} | {args.batch / s:.1f} | {peak / 2**20:.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
