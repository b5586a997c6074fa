"""Fault test: SIGKILL `genpref train` at random moments (some during a checkpoint save), resume with
train.resume=latest each time, and check the finished run equals an uninterrupted one; then a diverging
run (stopped, then rolled back) and concurrent runs on one directory.

    .venv/bin/python benchmarks/kill_resume.py --kills 10

Prints one line per kill (step reached, whether a save was in flight, the checkpoint resumed from), one
per scenario, and a summary: runs, kills, rollbacks, checkpoints verified finite, data lost. Exits
non-zero if any resume used an incomplete checkpoint, the final losses differ, a checkpoint is corrupt
or non-finite, or any data was lost (a metrics step missing or duplicated, the newest complete
checkpoint going backwards).
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


def finite_checkpoints(out: Path) -> tuple[int, int]:
    """(checkpoints whose every float tensor is finite, checkpoints) by an independent read of the files."""
    import torch
    from safetensors.torch import load_file

    def tensors(obj):
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from tensors(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                yield from tensors(v)

    good = total = 0
    for d in sorted(complete(out)):
        total += 1
        found = list(load_file(f"{d}/weights.safetensors").values())
        found += list(tensors(torch.load(f"{d}/state.pt", weights_only=True)))
        good += all(bool(torch.isfinite(t).all()) for t in found if t.is_floating_point())
    return good, total


def steps_lost(out: Path, upto: int) -> int:
    """Metric rows missing or duplicated among steps 1..upto."""
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return len(set(range(1, upto + 1)) - set(steps)) + (len(steps) - len(set(steps)))


def run_cli(out: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "genpref", "train", str(CONFIG), f"train.output_dir={out}", "train.log_every=1", *extra]
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def divergence(work: Path, steps: int) -> dict:
    """lr = 1e4 on the toy recipe: the loss goes NaN at step 3. Once stopped (then resumed by hand from the
    checkpoint the error names, with a sane lr), once rolled back automatically."""
    tally = {"runs": 0, "rollbacks": 0, "finite": 0, "checkpoints": 0, "lost": 0, "ok": True}
    common = ("train.lr=1e4", f"train.max_steps={steps}", "train.checkpoint_every=1", "train.keep_checkpoints=3")
    stop = work / "diverge-stop"
    first = run_cli(stop, *common)
    m = re.search(r"last good checkpoint: (\S+);", first.stderr)
    again = run_cli(stop, f"train.max_steps={steps}", "train.checkpoint_every=1", "train.lr=1e-3",
                    f"train.resume={m.group(1) if m else 'latest'}")
    roll = work / "diverge-rollback"
    rolled = run_cli(roll, *common, "train.on_divergence=rollback", "train.rollback_lr_factor=1e-6")
    tally["runs"] += 3
    tally["rollbacks"] += len(re.findall(r"rolling back to", rolled.stdout))
    for out in (stop, roll):
        good, total = finite_checkpoints(out)
        tally["finite"] += good
        tally["checkpoints"] += total
        tally["lost"] += steps_lost(out, steps)
    tally["ok"] = first.returncode == 1 and bool(m) and again.returncode == 0 and rolled.returncode == 0
    print(f"divergence: stopped with exit {first.returncode} naming {m.group(1) if m else None}; resumed from it with "
          f"train.lr=1e-3: exit {again.returncode}; rollback run: exit {rolled.returncode}, {tally['rollbacks']} rollbacks")
    return tally


def concurrent(work: Path, steps: int, rng: random.Random) -> dict:
    """A long run A; B on the same directory 3 s later (the issue's `resume=latest` twice) must exit 2 naming
    A's PID; A is then SIGKILLed and C (resume=latest) must take over the stale lock and finish."""
    tally = {"runs": 3, "kills": 1, "finite": 0, "checkpoints": 0, "lost": 0, "ok": True}
    out = work / "concurrent"
    args = [sys.executable, "-m", "genpref", "train", str(CONFIG), f"train.output_dir={out}", f"train.max_steps={steps}",
            "train.checkpoint_every=3", "train.log_every=1", "train.resume=latest"]
    a = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    lock = out / ".lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.is_file() and lock.read_text().strip() == str(a.pid)):
        time.sleep(0.05)  # A holds the lock (under load, importing torch alone can take seconds)
    time.sleep(3)
    b = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=120)
    named = f"in use by process {a.pid} " in b.stderr
    deadline = time.time() + 120
    while time.time() < deadline and not complete(out):
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.5))
    a.kill()
    a.wait()
    before = max((int(Path(d).name.split("-")[1]) for d in complete(out)), default=0)
    c = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    took_over = f"taking over the stale lock of process {a.pid}" in c.stdout
    good, total = finite_checkpoints(out)
    after = max((int(Path(d).name.split("-")[1]) for d in complete(out)), default=0)
    tally.update(finite=good, checkpoints=total, lost=steps_lost(out, steps) + (after < before))
    tally["ok"] = b.returncode == 2 and named and took_over and c.returncode == 0
    print(f"concurrent: second run exit {b.returncode}, named the holder's PID: {named}; first run killed; "
          f"third run took over the stale lock: {took_over}, exit {c.returncode}")
    return tally


def losses(out: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenario-steps", type=int, default=40, help="steps of the divergence and concurrency runs")
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
        good, total = finite_checkpoints(run)
        kill = {"runs": args.kills + 2, "kills": args.kills, "finite": good, "checkpoints": total,
                "lost": steps_lost(run, args.steps), "ok": ok and same}
        parts = [kill, divergence(work, args.scenario_steps), concurrent(work, args.scenario_steps, rng)]
        total_of = lambda key: sum(p.get(key, 0) for p in parts)
        print(f"summary: {total_of('runs')} runs, {total_of('kills')} kills, {total_of('rollbacks')} rollbacks, "
              f"{total_of('finite')}/{total_of('checkpoints')} checkpoints verified finite, data lost = {total_of('lost')}")
        passed = all(p["ok"] for p in parts) and total_of("lost") == 0 and total_of("finite") == total_of("checkpoints")
        return 0 if passed else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
