"""Export formats for `genpref export`: format name -> exporter, registered by each modality's commands module,
each saying which model kinds it accepts and whether it is their default format."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genpref.errors import UserError

# modules that register export formats when imported (imported only when `genpref export` runs)
MODULES = ("image.commands", "motion.commands")


@dataclass(frozen=True)
class Exporter:
    name: str
    write: Callable[[str | Path, str | Path], Path]  # (run_dir, out) -> the written path
    builder: str  # accepts every model.kind built in this module's package (genpref.build.model_kinds())
    summary: str
    default: bool = False  # the format of its model kinds when --format is not given

    def accepts(self, kind: str) -> bool:
        """Kinds built in the builder's package (image.adapter's formats take image.tasks' shapes-unet too)."""
        from genpref.build import model_kinds

        module = model_kinds().get(kind)
        return module is not None and module.split(".")[0] == self.builder.split(".")[0]


FORMATS: dict[str, Exporter] = {}


def register(exporter: Exporter) -> Exporter:
    FORMATS[exporter.name] = exporter
    return exporter


def load_all() -> dict[str, Exporter]:
    for module in MODULES:
        importlib.import_module(module)
    return FORMATS


def for_kind(kind: str, fmt: str | None) -> Exporter:
    """The exporter of `fmt` for runs of model.kind `kind` (its default format when `fmt` is None); UserError
    listing the valid formats otherwise."""
    formats = load_all()
    valid = [e.name for e in formats.values() if e.accepts(kind)]
    if not valid:
        raise UserError(f"model.kind {kind!r} has no export formats")
    if fmt is None:
        return next((formats[n] for n in valid if formats[n].default), formats[valid[0]])
    if fmt not in valid:
        other = " (a format of other model kinds)" if fmt in formats else ""
        raise UserError(f"--format {fmt!r}{other}: model.kind {kind!r} exports as "
                        + ", ".join(f"{n} ({formats[n].summary})" for n in valid))
    return formats[fmt]
