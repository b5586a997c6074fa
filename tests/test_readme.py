"""The README's commands as a checklist that fails when one breaks: every line of every fenced bash block is
read as a shell command; each must use the project's venv (.venv/bin/...), and each genpref command must
parse with the real parser, name files that exist and overrides that the config schema accepts. Files and
configs the prose names must exist too."""

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from genpref.cli import make_parser
from genpref.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def fenced_commands() -> list[list[str]]:
    """Each command of the README's ```bash blocks as argv (comments dropped, `a && b` split)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:cut])
                words = words[cut + 1 :]
    return [c for c in commands if c]


COMMANDS = fenced_commands()


def _program(argv: list[str]) -> list[str]:
    """argv without leading VAR=value environment assignments."""
    i = 0
    while i < len(argv) and ENV_ASSIGNMENT.match(argv[i]):
        i += 1
    return argv[i:]


def genpref_argv(argv: list[str]) -> list[str] | None:
    """The arguments genpref receives from a README command, or None for other programs."""
    argv = _program(argv)
    if argv[0] == ".venv/bin/genpref":
        return argv[1:]
    if "-m" in argv:
        module = argv[argv.index("-m") + 1]
        rest = argv[argv.index("-m") + 2 :]
        if module == "genpref":
            return rest
        if module == "motion.train":  # `python -m motion.train CONFIG ...` = `genpref train CONFIG ...`
            return ["train", *rest]
    return None


def test_the_readme_has_commands_of_every_kind():
    programs = {Path(_program(c)[0]).name for c in COMMANDS}
    assert {"genpref", "pytest", "pip", "python", "accelerate"} <= programs, programs
    assert sum(genpref_argv(c) is not None for c in COMMANDS) >= 15


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda c: " ".join(c)[:80])
def test_every_command_uses_the_venv(argv):
    program = _program(argv)[0]
    assert program.startswith(".venv/bin/") or argv[:3] == ["python3", "-m", "venv"], (
        f"{' '.join(argv)}: run {program} from .venv/bin/ (a bare command fails without an activated venv)")


@pytest.mark.parametrize("argv", [c for c in COMMANDS if genpref_argv(c) is not None], ids=lambda c: " ".join(c)[:80])
def test_every_genpref_command_parses_and_names_real_things(argv):
    args = genpref_argv(argv)
    if args == ["--version"] or args == ["--help"]:
        with pytest.raises(SystemExit) as done:
            make_parser().parse_known_args(args)
        assert done.value.code == 0
        return
    parsed, unknown = make_parser().parse_known_args(args)
    assert all("=" in u and not u.startswith("-") for u in unknown), f"unknown arguments {unknown}"
    assert getattr(parsed, "func", None), "no subcommand"
    overrides = list(getattr(parsed, "overrides", []) or []) + unknown
    config = getattr(parsed, "config", None)
    if config is not None:
        assert (ROOT / config).is_file(), f"{config} does not exist"
        load_config(ROOT / config, overrides)  # every override key and type is accepted
    elif overrides:  # eval/sample on a run: the keys must still be schema keys
        load_config(ROOT / "configs/toy/toy_dpo.yaml", overrides)
    program = _program(argv)
    if "--config_file" in program:
        assert (ROOT / program[program.index("--config_file") + 1]).is_file()
    if "-m" in program:
        assert importlib.util.find_spec(program[program.index("-m") + 1]) is not None


def test_pip_extras_and_test_files_named_exist():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = set(re.findall(r'\.\[([a-z0-9_-]+)\]', README))
    assert named and named <= extras, named - extras
    for argv in COMMANDS:
        if Path(argv[0]).name == "pytest":
            for word in argv[1:]:
                if word.startswith("tests/"):
                    assert (ROOT / word).is_file(), word


def test_paths_the_prose_names_exist():
    paths = set(re.findall(r"(?<![\w/])((?:configs|tests|benchmarks)/[\w./-]+\.(?:yaml|py))", README))
    assert len(paths) >= 10
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, f"the README names files that do not exist: {missing}"
