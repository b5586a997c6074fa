"""Config checking and the CLI as a user types it: exit codes, one-line messages, no torch for --help."""

import subprocess
import sys
from pathlib import Path

import pytest

from genpref.config import ConfigError, load_config, valid_keys

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "genpref", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


BASE = "model: {kind: toy}\nobjective: {name: dpo}\ntrain: {output_dir: OUT}\n"


def test_typo_exits_2_naming_key_and_suggestion(tmp_path):
    cfg = write(tmp_path, BASE)
    out = run_cli("validate", str(cfg), "train.learning_rat=1e-4")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "learning_rat" in lines[0] and "did you mean 'lr'" in lines[0]


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.lr=fast", "'train.lr' must be a number"),
        ("train.max_steps=1.5", "'train.max_steps' must be an integer"),
        ("model.lora=5", "'model.lora' must be a mapping"),
        ("data.ties=maybe", "'data.ties' is 'maybe'"),
        ("objective.name=dpoo", "did you mean 'dpo'"),
        ("model.kind=sd16", "did you mean 'sd15'"),
        ("nosection.x=1", "unknown key 'nosection'"),
    ],
)
def test_bad_values_are_named(tmp_path, override, needle):
    out = run_cli("validate", str(write(tmp_path, BASE)), override)
    assert out.returncode == 2 and needle in out.stderr, out.stderr


def test_missing_required_and_missing_file(tmp_path):
    cfg = write(tmp_path, "model: {kind: toy}\nobjective: {name: dpo}\n")
    with pytest.raises(ConfigError, match="missing required key 'train.output_dir'"):
        load_config(cfg)
    out = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "config file not found" in out.stderr


def test_invalid_yaml_names_file_and_line(tmp_path):
    out = run_cli("validate", str(write(tmp_path, "model:\n  kind: [toy\n")))
    assert out.returncode == 2 and "c.yaml" in out.stderr and "line" in out.stderr


def test_overrides_are_typed(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["train.lr=1e-4", "model.lora.rank=3", "train.sample_prompts=[a, b]"])
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.model.lora.rank == 3 and cfg.model.lora.targets  # defaults filled in
    assert cfg.train.sample_prompts == ["a", "b"]


def test_help_imports_no_torch():
    code = "import sys; from genpref.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "False False"
    assert "train" in out.stdout and "validate" in out.stdout


def test_every_shipped_config_validates():
    configs = sorted((ROOT / "configs").rglob("*.yaml"))
    configs = [c for c in configs if "accelerate" not in c.parts]
    assert len(configs) >= 1
    for path in configs:
        cfg = load_config(path)  # keys and types
        assert cfg.model.kind and cfg.objective.name, path
    print(f"{len(configs)} configs validated")


def test_schema_lists_dotted_keys():
    keys = valid_keys()
    assert "train.lr" in keys and "model.lora.rank" in keys and "objective.tau_quantile" in keys
