"""Throughput and peak memory of one Diffusion-DPO training step: genpref's step against a baseline written
the way diffusers' research DPO script works. Run by hand: `python benchmarks/image_step.py [--size small]`.

genpref:  latents and text embeddings from the content-keyed cache (filled beforehand, as a previous run
          or epoch would), the reference = the same UNet with LoRA disabled, winners and losers in one
          concatenated forward per network.
baseline: every step decodes and preprocesses the JPEGs, runs the VAE encoder and the text encoder, and
          keeps a separate frozen reference UNet next to the LoRA policy (also one concatenated forward each).

Both train the same LoRA on the same tiny model, pairs, batch, timesteps and noise. Each variant runs in
its own process. Peak memory: CUDA max_memory_allocated; CPU the peak resident set during the timed
steps minus the process's resident set before any model was built (sampled every millisecond).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Highest resident set seen by a 1 ms sampling thread between start() and stop()."""

    def __init__(self):
        self.peak, self._run = 0, False

    def _loop(self):
        while self._run:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def start(self):
        self.peak, self._run = rss_bytes(), True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._run = False
        self._thread.join()
        return max(self.peak, rss_bytes())


def make_config(args, out_dir: str):
    from genpref.config import from_dict

    return from_dict({
        "model": {"kind": "tiny-sd", "size": args.size, "lora": {"rank": 8, "alpha": 8}},
        "data": {"pairs": "tiny://pairs", "resolution": args.resolution, "cache_dir": args.cache},
        "objective": {"name": "dpo", "beta": 500.0},
        "train": {"output_dir": out_dir, "batch_size": args.batch},
    })


def worker(args) -> dict:
    import torch

    from genpref.losses import denoising_error, diffusion_dpo
    from genpref.noising import noised_branch
    from genpref.train import branch_errors
    from image.adapter import build_adapter
    from image.data import decode_image, preprocess

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401  (library code is not step memory)
    from transformers import CLIPTextModel  # noqa: F401

    torch.nn.functional.conv2d(torch.randn(1, 4, 8, 8), torch.randn(4, 4, 3, 3))  # CPU kernels initialised
    base_rss = rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    adapter = build_adapter(make_config(args, args.out), device, torch.float32)
    items = adapter.load_items("pairs")
    batches = [[items[(i * args.batch + j) % len(items)] for j in range(args.batch)] for i in range(args.steps + 2)]
    if args.variant == "prepare":  # fill the cache once, as an earlier run or epoch would
        for batch in batches:
            prompts = [it["prompt"] for it in batch]
            adapter.encode([it["w"] for it in batch], prompts)
            adapter.encode([it["l"] for it in batch], prompts)
        return {"cached_items": adapter.cache.store.hits + adapter.cache.store.misses}

    sched = adapter.noise_scheduler
    optimizer = torch.optim.AdamW(adapter.trainable_parameters(), lr=1e-5)
    if args.variant == "baseline":
        unet = adapter.denoiser
        reference_unet = copy.deepcopy(unet).requires_grad_(False)
        reference_unet.disable_adapters()  # the separate reference: the base weights only
        vae, text_encoder, tokenizer = adapter.components.vae, adapter.components.text_encoders[0], adapter.components.tokenizers[0]
        scale = vae.config.scaling_factor

    def genpref_step(batch, t, eps):
        prompts = [it["prompt"] for it in batch]
        w = adapter.encode([it["w"] for it in batch], prompts)
        l = adapter.encode([it["l"] for it in batch], prompts)
        err, ref = branch_errors(adapter, {"w": noised_branch(sched, w, t, eps), "l": noised_branch(sched, l, t, eps)}, True)
        return diffusion_dpo(err["w"], err["l"], ref["w"], ref["l"], beta=500.0).mean()

    def baseline_step(batch, t, eps):
        pixels = [preprocess(decode_image(it[k].data, it[k].name), args.resolution)[0] for k in ("w", "l") for it in batch]
        with torch.no_grad():
            latents = vae.encode(torch.stack(pixels).to(device)).latent_dist.sample() * scale
            ids = tokenizer([it["prompt"] for it in batch], padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids.to(device)
            text = text_encoder(ids)[0].repeat(2, 1, 1)
        t2, eps2 = t.repeat(2), eps.repeat(2, 1, 1, 1)
        x_t = sched.add_noise(latents, eps2, t2)
        pred = unet(x_t, t2, encoder_hidden_states=text).sample
        with torch.no_grad():
            ref_pred = reference_unet(x_t, t2, encoder_hidden_states=text).sample
        err_w, err_l = denoising_error(pred, eps2).chunk(2)
        ref_w, ref_l = denoising_error(ref_pred, eps2).chunk(2)
        return diffusion_dpo(err_w, err_l, ref_w, ref_l, beta=500.0).mean()

    step = genpref_step if args.variant == "genpref" else baseline_step
    side = args.resolution // adapter.codec.factor
    g = torch.Generator().manual_seed(0)
    noise = [(torch.randint(0, 1000, (args.batch,), generator=g).to(device),
              torch.randn(args.batch, 4, side, side, generator=g).to(device)) for _ in batches]
    meter = PeakRSS()
    for i, batch in enumerate(batches):
        if i == 2:  # two warm-up steps (allocator, kernel selection) are not timed
            if device.type == "cuda":
                torch.cuda.synchronize()
            meter.start()
            start, cpu_start = time.perf_counter(), time.process_time()
        loss = step(batch, *noise[i])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak_rss = meter.stop()
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_rss - base_rss
    # On a CPU shared with other work, CPU seconds measure the step's cost more steadily than wall time.
    seconds = elapsed if device.type == "cuda" else cpu
    return {"pairs_per_s": args.steps * args.batch / seconds, "wall_pairs_per_s": args.steps * args.batch / elapsed,
            "peak_bytes": peak, "device": str(device), "loss": loss.item()}


def run_variant(variant: str, args, out: str) -> dict:
    cmd = [sys.executable, __file__, "--variant", variant, "--out", out, "--cache", args.cache, "--size", args.size,
           "--steps", str(args.steps), "--batch", str(args.batch), "--resolution", str(args.resolution),
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="default", help="tiny model preset: default | small")
    parser.add_argument("--resolution", type=int, default=32, help="image side (the tiny data is 32 px)")
    parser.add_argument("--batch", type=int, default=4, help="pairs per step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each variant; medians reported")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(worker(args)))
        return
    with tempfile.TemporaryDirectory(prefix="genpref-bench-") as tmp:
        args.cache = str(Path(tmp) / "cache")
        out = str(Path(tmp) / "run")
        run_variant("prepare", args, out)
        runs = {"genpref": [], "baseline": []}
        for _ in range(args.repeats):  # alternate, so a busy machine slows both alike
            for name in runs:
                runs[name].append(run_variant(name, args, out))
    median = lambda rs, k: statistics.median(r[k] for r in rs)
    ours, base = ({k: median(rs, k) for k in ("pairs_per_s", "wall_pairs_per_s", "peak_bytes")} | {"device": rs[0]["device"]}
                  for rs in runs.values())
    mib = 2**20
    print(f"tiny-sd ({args.size}), {args.resolution} px, batch {args.batch} pairs, {args.steps} timed steps, "
          f"median of {args.repeats} runs each, device {ours['device']}, {args.threads} thread(s)")
    unit = "pairs/s" if ours["device"].startswith("cuda") else "pairs/CPU-s"
    print(f"{'':10s} {unit:>12s} {'pairs/wall-s':>12s} {'peak MiB':>9s}")
    for name, r in (("genpref", ours), ("baseline", base)):
        print(f"{name:10s} {r['pairs_per_s']:12.2f} {r['wall_pairs_per_s']:12.2f} {r['peak_bytes'] / mib:9.1f}")
    speed = ours["pairs_per_s"] / base["pairs_per_s"]
    memory = ours["peak_bytes"] / base["peak_bytes"]
    print(f"throughput ratio (genpref / baseline): {speed:.2f}x  (target >= 2x)")
    print(f"peak memory ratio (genpref / baseline): {memory:.2f}x  (target <= 0.7x)")


if __name__ == "__main__":
    main()
