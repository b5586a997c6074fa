"""User-facing errors: one clear line naming the file, key or row; the CLI prints it and exits non-zero."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (data, weights, paths). The message is shown as is, without a traceback."""


class BadSample(UserError):
    """One data item is unusable (corrupt image, NaN motion, wrong width). Datasets skip and count these
    when `data.on_bad_sample: skip`, and raise them otherwise."""
