"""Fault test: SIGKILL `genpref train` at random moments (some during a checkpoint save), resume with
train.resume=latest each time, and check the finished run equals an uninterrupted one.

    .venv/bin/python benchmarks/kill_resume.py --kills 10

Prints one line per kill (step reached, whether a save was in flight, the checkpoint resumed from) and
exits non-zero if any resume used an incomplete checkpoint or the final losses differ.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/toy/toy_dpo.yaml"


def cmd(out: Path, steps: int, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "genpref", "train", str(CONFIG), f"train.output_dir={out}", f"train.max_steps={steps}",
            "train.checkpoint_every=3", "train.keep_checkpoints=2", "train.log_every=1"]
    return args + (["train.resume=latest"] if resume else [])


def complete(out: Path) -> set[str]:
    """Checkpoints that are complete by an independent check: manifest present, every file its size."""
    done = set()
    for d in (out / "checkpoints").glob("step-*") if (out / "checkpoints").is_dir() else []:
        m = d / "manifest.json"
        try:
            files = json.loads(m.read_text())["files"]
        except (OSError, ValueError):
            continue
        if all((d / f).is_file() and (d / f).stat().st_size == meta["size"] for f, meta in files.items()):
            done.add(str(d))
    return done


def losses(out: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="genpref-kill-"))
    try:
        straight = work / "straight"
        subprocess.run(cmd(straight, args.steps, False), check=True, capture_output=True, cwd=ROOT)
        run = work / "killed"
        ok, during_save, resumes = True, 0, 0
        for k in range(args.kills):
            before = complete(run)
            log = open(work / f"attempt-{k}.log", "w")
            proc = subprocess.Popen(cmd(run, args.steps, resume=k > 0), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            # wait until this attempt has trained a step of its own, then kill at a random moment
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None:
                text = (work / f"attempt-{k}.log").read_text()
                m = re.search(r"resumed from (\S+) at step (\d+)", text)
                begun = int(m.group(2)) if m else 0
                if (k == 0 or m or "train:" in text) and (run / "metrics.jsonl").exists() and len(losses(run)) > begun:
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.6))
            saving = any((run / "checkpoints").glob(".step-*.tmp")) if (run / "checkpoints").is_dir() else False
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            log.close()
            tmp_left = any((run / "checkpoints").glob(".step-*.tmp")) if (run / "checkpoints").is_dir() else False
            during_save += tmp_left or saving
            text = (work / f"attempt-{k}.log").read_text()
            m = re.search(r"resumed from (\S+) at step (\d+)", text)
            if m:
                resumes += 1
                if m.group(1) not in before:
                    ok = False
                    print(f"kill {k}: resumed from {m.group(1)}, which was NOT complete before the start")
            reached = len(losses(run)) if (run / "metrics.jsonl").exists() else 0
            print(f"kill {k + 1}: reached step {reached}, save in flight: {tmp_left or saving}, "
                  f"resumed from: {m.group(1) if m else 'fresh start'}")
        final = subprocess.run(cmd(run, args.steps, True), capture_output=True, text=True, cwd=ROOT)
        if final.returncode != 0:
            print(final.stderr[-2000:])
            return 1
        m = re.search(r"resumed from (\S+) at step (\d+)", final.stdout + final.stderr)
        resumes += bool(m)
        same = losses(run) == losses(straight)
        print(f"{args.kills} kills ({during_save} with a save in flight), {resumes} resumes, all from complete checkpoints: {ok}; "
              f"final losses identical to the uninterrupted run: {same}")
        return 0 if ok and same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
