"""Text files users hand us (metadata.jsonl, prompts, captions, split lists) are read as UTF-8 or refused
with one line naming the file and what its encoding looks like; nothing trains on U+FFFD."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path

from genpref.errors import UserError

_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_UTF32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)


def guess_encoding(data: bytes) -> str:
    """A short description of a non-UTF-8 file's likely encoding, for the error message."""
    if data.startswith(_UTF32_BOMS):
        return "UTF-32 (byte-order mark)"
    if data.startswith(_UTF16_BOMS):
        return "UTF-16 (byte-order mark)"
    if b"\x00" in data[:1024]:
        return "UTF-16 or another two-byte encoding (NUL bytes)"
    return "latin-1 / cp1252 or another 8-bit encoding"


def encoding_error(path: Path, data: bytes, err: UnicodeDecodeError) -> str:
    return (f"{path}: not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start}; looks like "
            f"{guess_encoding(data)}); re-save it as UTF-8, e.g. iconv -f LATIN1 -t UTF-8")


def read_utf8(path: str | Path, error=UserError) -> str:
    """The text of `path` decoded as UTF-8 (a UTF-8 byte-order mark is dropped); `error(message)` is
    raised otherwise (UserError, or a BadSample factory where the file is one skippable sample)."""
    path = Path(path)
    data = path.read_bytes()
    if data.startswith(_UTF16_BOMS) or data.startswith(_UTF32_BOMS):
        raise error(encoding_error(path, data, UnicodeDecodeError("utf-8", data, 0, 1, "byte-order mark")))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise error(encoding_error(path, data, err)) from None


def jsonl_records(path: str | Path, prefix: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a UTF-8 jsonl file; one UserError starting with
    `prefix` (the key or flag that named the file, e.g. "data.pairs") and the file for a bad encoding,
    invalid JSON or a line that is not an object."""
    text = read_utf8(path, error=lambda msg: UserError(f"{prefix}: {msg}"))
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{prefix}: {path} line {n}: invalid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{prefix}: {path} line {n}: expected a JSON object")
        yield n, record
