"""Config checking and the CLI as a user types it: exit codes, one-line messages, no torch for --help."""

import argparse
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


# ---- a newcomer's path (issue 20)

TINY_DRO, TINY_SOPO = ROOT / "configs/image/tiny_dro.yaml", ROOT / "configs/motion/tiny_mdm_sopo.yaml"


@pytest.mark.parametrize(
    "override, message",
    [
        ("lr=1e-4", "unknown key 'lr' (did you mean 'train.lr'?)"),
        ("learning_rate=1e-4", "unknown key 'learning_rate' (did you mean 'train.lr'?)"),
        ("rank=2", "unknown key 'rank' (did you mean 'model.lora.rank'?)"),
        ("steps=3", "unknown key 'steps' (did you mean 'online.steps' or 'train.max_steps'?)"),
        ("trian.lr=1", "unknown key 'trian' (did you mean 'train'?)"),
    ],
)
def test_a_key_without_its_section_gets_the_section(tmp_path, override, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), [override])
    assert str(err.value).endswith(message)


@pytest.mark.parametrize(
    "config, kind, message",
    [
        (TINY_DRO, "tiny-mdm", "'model.kind' 'tiny-mdm' is a motion model, but data.experts is set, which only image models "
                               "read; image model kinds: sd15, sdxl, tiny-sd, tiny-sdxl, shapes-unet"),
        (TINY_SOPO, "tiny-sd", "'model.kind' 'tiny-sd' is an image model, but data.root is set, which only motion models "
                               "read; motion model kinds: mdm, mld, tiny-mdm, tiny-mld"),
    ],
)
def test_validate_catches_a_model_kind_of_the_wrong_modality(tmp_path, config, kind, message):
    out = run_cli("validate", str(config), f"model.kind={kind}")
    assert out.returncode == 2 and out.stderr.strip() == f"genpref: config error: {message}"
    run = tmp_path / "run"
    out = run_cli("train", str(config), f"model.kind={kind}", f"train.output_dir={run}")
    assert out.returncode == 2 and message in out.stderr and not run.exists()  # no partial run directory


def test_version_and_help_on_every_argument():
    from genpref.cli import make_parser

    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == "genpref 0.1.0"
    parser = make_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"train", "validate", "sample", "eval", "report", "demo", "bench", "export", "push"} <= set(subparsers.choices)
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, sub in subparsers.choices.items()
               for a in sub._actions if not a.help]
    assert not missing, f"arguments without help text: {missing}"


@pytest.mark.parametrize("command", ["sample", "eval", "export", "push", "report"])
def test_a_missing_run_directory_is_named_as_one(tmp_path, command):
    extra = {"sample": ["--prompt", "x", "--out", "y"], "export": ["--out", "y"], "push": ["--repo", "me/x"]}.get(command, [])
    out = run_cli(command, str(tmp_path / "nope"), *extra)
    assert out.returncode == 1
    wanted = "a run directory or a config file" if command == "eval" else "a run directory"
    assert f"{tmp_path / 'nope'}: not found; expected {wanted}" in out.stderr, out.stderr
    (tmp_path / "empty").mkdir()
    out = run_cli(command, str(tmp_path / "empty"), *extra)
    assert out.returncode == 1 and "not a run directory" in out.stderr and "config file not found" not in out.stderr


def test_scorer_takes_its_weights_path_on_the_command_line():
    from genpref.cli import make_parser
    from genpref.config import from_dict
    from image.evaluate import scorer_specs

    args, _ = make_parser().parse_known_args(["eval", "runs/x", "--scorer", "pickscore=/models/PickScore_v1", "--scorer", "clip"])
    cfg = from_dict({"model": {"kind": "tiny-sd"}, "objective": {"name": "dpo"}, "train": {"output_dir": "o"}})
    specs = scorer_specs(args.scorer, cfg, "prompts.txt")
    assert [(s.name, s.path) for s in specs] == [("pickscore", "/models/PickScore_v1"), ("clip", None)]


def test_outputs_are_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"/runs/", "/genpref-demo/", "/genpref-report.html", "/eval/"} <= set(ignored)


def test_validate_imports_no_torch_even_with_trackers_and_modality_checks():
    code = ("import sys; from genpref.cli import main\n"
            "rc = main(['validate', 'configs/image/tiny_dpo.yaml', 'train.report_to=[tensorboard]'])\n"
            "print(rc, 'torch' in sys.modules, 'accelerate' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "0 False False", out.stderr
