"""One reader for every weight file genpref loads, which never runs code from the file.

`load_weights(path, what)` reads `.safetensors` with safetensors and anything else with
`torch.load(weights_only=True)`, whose restricted unpickler builds only tensors, plain containers and the
globals allowed here:
- plain builtins and `collections` containers, `typing.Any`, paths and `argparse.Namespace`: the data
  that training frameworks write beside the weights (Lightning's epoch / global_step / version keys,
  optimizer states, callback states);
- the OmegaConf classes of a Lightning checkpoint's `hyper_parameters` (MLD saves its whole config there).
  They are mapped to `Inert`, a stand-in that keeps the pickled state as data: no OmegaConf code runs,
  and OmegaConf need not be installed to read the weights.
Everything else (a pickled function, a class with a custom reducer) is refused, and every failure is one
line that names the file. Torch ≥ 2.5 (safe_globals with (object, "module.name") pairs).
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import typing
from pathlib import Path
from typing import Any

from genpref.errors import UserError

# globals of the OmegaConf objects in a Lightning `hyper_parameters` (omegaconf 2.0 - 2.3)
OMEGACONF_GLOBALS = tuple(
    f"omegaconf.{name}"
    for name in (
        "dictconfig.DictConfig", "listconfig.ListConfig", "base.ContainerMetadata", "base.Metadata",
        "nodes.AnyNode", "nodes.StringNode", "nodes.IntegerNode", "nodes.FloatNode", "nodes.BooleanNode",
        "nodes.BytesNode", "nodes.PathNode", "nodes.ValueNode",
    )
)  # fmt: skip
PLAIN_GLOBALS = (dict, list, tuple, set, frozenset, int, float, str, bool, bytes, complex, slice, typing.Any,
                 collections.OrderedDict, collections.defaultdict, collections.deque, pathlib.PurePosixPath,
                 pathlib.PosixPath, pathlib.PureWindowsPath, pathlib.WindowsPath, argparse.Namespace)  # fmt: skip


class Inert:
    """Stand-in for an allowed class whose own code must not run: its pickled state, kept as plain data."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"Inert({self.__dict__.get('state')!r})"


def allowed_globals() -> list:
    """What `torch.load(weights_only=True)` may build here besides tensors, as safe_globals entries."""
    return [*PLAIN_GLOBALS, *((Inert, name) for name in OMEGACONF_GLOBALS)]


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def load_weights(path: str | Path, what: str = "checkpoint", map_location: str = "cpu") -> Any:
    """The object stored in `path` (a state dict, a checkpoint dict, ...), read without running pickle code.
    A missing file, a corrupt one or one that needs code to be built raises UserError naming the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device=map_location)
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch and safetensors raise many types for corrupt or code-carrying files
        raise UserError(f"{path}: cannot read this {what} without running code from it ({_reason(err)})") from None
