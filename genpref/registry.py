"""The names the synthetic tasks add to genpref: model kinds, reward models, data schemes, evaluation
prompt sets and demo parts, each mapped to the module that serves it.

The product's own names live in plain dicts in `genpref/build.py` (MODEL_KINDS, REWARDS). The synthetic
tasks and their tiny test data (`image/tasks/`, `motion/tasks/`) register theirs here when their package is
imported; a lookup that misses imports TASK_PACKAGES once, so genpref/ never imports image/ or motion/
at module import time, and no adapter, data reader, model or evaluation module names a task. Values are
module paths, as in build.py: registering imports nothing, and a config still cannot import arbitrary code.

    registry.model_kind("shapes-unet", "image.tasks.shapes.model")      # module with build_adapter(cfg, ...)
    registry.reward("moves", "motion.tasks.moves.reward")                # module with build_reward(spec, ...)
    registry.data_scheme("image", "tiny://", "image.tasks.tiny_data")    # module with resolve_data(spec, ...)
    registry.prompt_set("shapes", "image.tasks.shapes.demo")             # module with prompt_set(name)
    registry.demo_part("motion", "motion.tasks.moves.demo")              # a genpref.demo.TaskPart module
"""

from __future__ import annotations

import importlib

TASK_PACKAGES = ("image.tasks", "motion.tasks")

MODEL_KINDS: dict[str, str] = {}  # model.kind -> module with build_adapter(cfg, device, weight_dtype)
REWARDS: dict[str, str] = {}  # reward.models[].name -> module with build_reward(spec, cfg, device)
DATA_SCHEMES: dict[str, str] = {}  # "<modality>:<scheme>://" -> module with resolve_data(spec, key, cfg, adapter)
PROMPT_SETS: dict[str, str] = {}  # eval.prompts / --prompts name -> module with prompt_set(name)
DEMO_PARTS: dict[str, str] = {}  # `genpref demo` part -> module implementing genpref.demo.TaskPart

_loaded = False


def _register(table: dict[str, str], name: str, module: str) -> None:
    if table.get(name, module) != module:
        raise ValueError(f"registry: {name!r} is registered twice ({table[name]} and {module})")
    table[name] = module


def model_kind(name: str, module: str) -> None:
    _register(MODEL_KINDS, name, module)


def reward(name: str, module: str) -> None:
    _register(REWARDS, name, module)


def data_scheme(modality: str, scheme: str, module: str) -> None:
    _register(DATA_SCHEMES, f"{modality}:{scheme}", module)


def prompt_set(name: str, module: str) -> None:
    _register(PROMPT_SETS, name, module)


def demo_part(name: str, module: str) -> None:
    _register(DEMO_PARTS, name, module)


def load_tasks() -> None:
    """Import every task package once (each registers its names)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for package in TASK_PACKAGES:
            importlib.import_module(package)


def every(table: dict[str, str]) -> dict[str, str]:
    """The whole table, every task loaded (for listings: --help, the error that lists valid names)."""
    load_tasks()
    return table


def find(table: dict[str, str], name: str) -> str | None:
    """The module registered for `name`, loading the tasks on a miss; None when nobody registered it."""
    if name not in table:
        load_tasks()
    return table.get(name)


def resolve_data(modality: str, spec, key: str, cfg, adapter=None):
    """A data path of the config (`data.<key>`) as given, or, for a registered scheme such as `tiny://...`,
    the path its task writes the data to (on first use, under the run directory)."""
    if spec is None or "://" not in str(spec):
        return spec
    scheme = str(spec).split("://", 1)[0] + "://"
    module = find(DATA_SCHEMES, f"{modality}:{scheme}")
    if module is None:
        from genpref.errors import UserError

        known = sorted(k.split(":", 1)[1] for k in every(DATA_SCHEMES) if k.startswith(f"{modality}:"))
        raise UserError(f"data.{key}: unknown data scheme in {spec!r}; {modality} schemes: {', '.join(known) or 'none'}")
    return importlib.import_module(module).resolve_data(str(spec), key, cfg, adapter)
