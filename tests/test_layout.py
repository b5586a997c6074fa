"""The product and its test bench live apart (STYLE 13): the synthetic tasks (shapes, moves, the tiny data)
sit in image/tasks/ and motion/tasks/ and register themselves with genpref.registry; no production module
of image/ or motion/ imports them or names them, and genpref/ imports neither at module import time."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from genpref import registry

ROOT = Path(__file__).resolve().parents[1]
# every module of the product in image/ and motion/ (adapters, data readers, models, evaluation, rewards, ...)
PRODUCTION = sorted(p.relative_to(ROOT).as_posix() for package in ("image", "motion") for p in (ROOT / package).glob("*.py"))
TASK_PACKAGES = ("image.tasks", "motion.tasks")
# what names a task in a string: its data schemes, model kind, reward / prompt-set names, modules
TASK_WORDS = re.compile(r"shapes://|tiny://|shapes-unet|tiny-motion|tiny_data|image\.tasks|motion\.tasks|"
                        r"\bshapes task\b|\bmoves\b|^shapes$")


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_the_production_list_covers_the_adapters_data_models_and_evaluation():
    assert {"image/adapter.py", "image/data.py", "image/models.py", "image/evaluate.py", "motion/adapter.py",
            "motion/data.py", "motion/mdm.py", "motion/mld.py", "motion/evaluate.py", "motion/rewards.py",
            "motion/evaluator.py"} <= set(PRODUCTION)  # fmt: skip
    assert not any("shapes" in p or "moves" in p or "tiny_data" in p or "demo" in p for p in PRODUCTION)


@pytest.mark.parametrize("path", PRODUCTION)
def test_production_modules_neither_import_nor_name_the_tasks(path):
    tree = ast.parse((ROOT / path).read_text())
    imported = [n for n in _imports(tree) if n.startswith(TASK_PACKAGES) or n in ("image.tasks", "motion.tasks")]
    assert not imported, f"{path} imports {imported}"
    named = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and TASK_WORDS.search(node.value)]  # fmt: skip
    assert not named, f"{path} names a synthetic task: {named[0][:120]!r}"


def test_importing_genpref_imports_neither_modality():
    code = ("import sys, genpref.build, genpref.registry, genpref.demo, genpref.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('image', 'motion')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_the_tasks_register_their_names():
    from genpref.build import model_kinds, rewards

    assert model_kinds()["shapes-unet"] == "image.tasks.shapes.model"
    assert rewards()["moves"] == "motion.tasks.moves.reward" and rewards()["tiny-motion"] == "motion.tasks.tiny_data"
    assert registry.find(registry.DATA_SCHEMES, "image:tiny://") == "image.tasks.tiny_data"
    assert registry.find(registry.PROMPT_SETS, "shapes") == "image.tasks.shapes.data"
    assert set(registry.every(registry.DEMO_PARTS)) == {"image", "motion"}
    for table in (registry.MODEL_KINDS, registry.REWARDS, registry.DATA_SCHEMES, registry.PROMPT_SETS, registry.DEMO_PARTS):
        assert all(module.startswith(TASK_PACKAGES) for module in table.values())


def test_registering_a_name_twice_for_another_module_fails():
    registry.model_kind("shapes-unet", "image.tasks.shapes.model")  # the same again: fine
    with pytest.raises(ValueError, match="registered twice"):
        registry.model_kind("shapes-unet", "somewhere.else")


def test_a_path_without_a_scheme_is_kept_and_an_unknown_scheme_is_named():
    from genpref.errors import UserError

    assert registry.resolve_data("image", "data/pairs.parquet", "pairs", cfg=None) == "data/pairs.parquet"
    assert registry.resolve_data("motion", None, "root", cfg=None) is None
    with pytest.raises(UserError, match=r"data.pairs: unknown data scheme in 'ftp://x'; image schemes: shapes://, tiny://"):
        registry.resolve_data("image", "ftp://x", "pairs", cfg=None)
