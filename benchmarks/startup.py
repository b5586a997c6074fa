"""Start-up: time from the command to the end of the first training step, `genpref train` against a
re-implementation of diffusers' DPO training script (benchmarks/image_step.py `run_script`), both loading the
same tiny SD pipeline directory with from_pretrained and reading the same Pick-a-Pic-format parquet.

    python benchmarks/startup.py [--repeats 3]

genpref cold: a fresh cache (the first step encodes its images and prompts); warm: the cache of an earlier
run (a rerun, a resume, a sweep over the same data). The script has no cache. Each start is its own
process; the parent watches for the first step (genpref: the first metrics.jsonl row; the script: a marker
written after its first step) and reads the child's CPU seconds from /proc at that moment (steady on a
shared machine) besides the wall time. Minimum over repeats; the two commands alternate.
The real script also imports `datasets` and converts the parquet to Arrow; the re-implementation reads the
parquet with pyarrow, which flatters the script.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_to_first_step(cmd: list[str], done: Path, env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds from launch until `done` exists and is non-empty; the child is then stopped."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not (done.is_file() and done.stat().st_size > 0):
            if proc.poll() is not None:
                raise SystemExit(f"{' '.join(cmd)} ended before its first step:\n{proc.stderr.read()[-3000:]}")
            time.sleep(0.005)
        return time.perf_counter() - start, cpu_seconds(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def prepare(tmp: Path, resolution: int) -> tuple[Path, Path]:
    """A tiny SD pipeline directory (what from_pretrained loads) and a parquet of 8 pairs."""
    from image.models import build_tiny, make_pipeline, quiet
    from image.tasks.tiny_data import write_pairs

    with quiet():
        make_pipeline(build_tiny("sd", tokenizer_dir=tmp / "tokenizer")).save_pretrained(str(tmp / "model"))
    return tmp / "model", write_pairs(tmp / "pairs.parquet", n=8, size=2 * resolution, ties=0)


def genpref_cmd(model: Path, pairs: Path, out: Path, cache: Path, resolution: int) -> list[str]:
    """`genpref train` as a user types it, with the script's LoRA setting (rank 8 on the attention projections)."""
    config = out.parent / f"{out.name}.yaml"
    config.write_text(
        f"model: {{kind: sd15, path: {model}, lora: {{rank: 8, alpha: 8}}}}\n"
        f"data: {{pairs: {pairs}, resolution: {resolution}, cache_dir: {cache}}}\n"
        "objective: {name: dpo, beta: 5000.0}\n"
        f"train: {{output_dir: {out}, batch_size: 2, max_steps: 100, lr: 1.0e-5, checkpoint_every: 0}}\n"
    )
    return [sys.executable, "-m", "genpref", "train", str(config)]


def script_imports() -> list[str]:
    """What train_diffusion_dpo.py imports at its top (its start pays for them all); the names not installed
    here (it needs `datasets` and `wandb`) are returned and skipped, which flatters the script."""
    import importlib

    missing = []
    for name in ("numpy", "torch", "torch.nn.functional", "torch.utils.checkpoint", "transformers", "wandb",
                 "accelerate", "accelerate.logging", "accelerate.utils", "datasets", "huggingface_hub", "packaging.version",
                 "peft", "peft.utils", "PIL.Image", "torchvision.transforms", "tqdm.auto", "diffusers", "diffusers.loaders",
                 "diffusers.optimization", "diffusers.utils", "diffusers.utils.import_utils"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    import diffusers
    import transformers

    for name in ("AutoencoderKL", "DDPMScheduler", "DiffusionPipeline", "DPMSolverMultistepScheduler", "UNet2DConditionModel"):
        getattr(diffusers, name)  # `from diffusers import ...` resolves each lazily-imported name
    diffusers.loaders.StableDiffusionLoraLoaderMixin  # noqa: B018
    transformers.AutoTokenizer, transformers.PretrainedConfig  # noqa: B018
    return missing


def script_main(args) -> None:
    """The child process of the script's start: its imports, its loop with from_pretrained loading; a marker
    after step 1."""
    script_imports()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import image_step

    marker = Path(args.marker)

    def after_step(k):
        if k == 1:
            marker.write_text("1\n")

    import torch

    run = argparse.Namespace(resolution=args.resolution, batch=2, epochs=100, pairs=args.pairs, size="default")
    image_step.run_script(run, torch.device("cpu"), model_dir=args.model, after_step=after_step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--script-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", help=argparse.SUPPRESS)
    parser.add_argument("--marker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.script_child:
        script_main(args)
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    results: dict[str, list[tuple[float, float]]] = {"script": [], "genpref cold": [], "genpref warm": []}
    with tempfile.TemporaryDirectory(prefix="genpref-startup-") as tmp_name:
        tmp = Path(tmp_name)
        model, pairs = prepare(tmp, args.resolution)
        warm_cache = tmp / "warm-cache"
        for i in range(args.repeats + 1):  # round 0 fills the warm cache and warms the disk cache; not counted
            runs = {
                "script": ([sys.executable, __file__, "--script-child", "--model", str(model), "--pairs", str(pairs),
                            "--resolution", str(args.resolution), "--marker", str(tmp / f"marker-{i}")], tmp / f"marker-{i}"),
                "genpref cold": (genpref_cmd(model, pairs, tmp / f"cold-{i}", tmp / f"cold-cache-{i}", args.resolution),
                                 tmp / f"cold-{i}" / "metrics.jsonl"),
                "genpref warm": (genpref_cmd(model, pairs, tmp / f"warm-{i}", warm_cache, args.resolution),
                                 tmp / f"warm-{i}" / "metrics.jsonl"),
            }
            for name, (cmd, done) in runs.items():
                measured = time_to_first_step(cmd, done, env)
                if i > 0:
                    results[name].append(measured)
    wall = {k: min(w for w, _ in v) for k, v in results.items()}
    cpu = {k: min(c for _, c in v) for k, v in results.items()}
    print(f"start-up to the end of the first step, tiny SD from a pipeline directory, {args.resolution} px, "
          f"batch 2, CPU, minimum of {args.repeats}")
    print("| command | wall s | CPU s | ÷ script (wall) | ÷ script (CPU) |\n|---|---:|---:|---:|---:|")
    for k in results:
        print(f"| {k} | {wall[k]:.2f} | {cpu[k]:.2f} | {wall[k] / wall['script']:.2f} | {cpu[k] / cpu['script']:.2f} |")


if __name__ == "__main__":
    main()
