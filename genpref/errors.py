"""User-facing errors: one clear line naming the file, key or row; the CLI prints it and exits non-zero."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (data, weights, paths). The message is shown as is, without a traceback.

    Messages are one line by construction: a multi-line cause (torch's weights-only refusal, say) keeps
    its first line, which names what failed."""

    def __init__(self, message: object = ""):
        lines = str(message).strip().splitlines() or [""]
        super().__init__(lines[0] + (" …" if len(lines) > 1 else ""))


class BadSample(UserError):
    """One data item is unusable (corrupt image, NaN motion, wrong width). Datasets skip and count these
    when `data.on_bad_sample: skip`, and raise them otherwise."""
