"""Request bodies: read within a size limit, decode as UTF-8 JSON within a depth limit, say plainly what is wrong.

Every failure is a `BadRequest` (400) or `TooLarge` (413) whose message a person can act on; nothing here raises
RecursionError, UnicodeDecodeError or another exception that would become a 500.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import AsyncIterator
from typing import Any

# How much of an over-long body is still read (and thrown away) before answering 413, so that a client that
# sends its whole body before reading the answer sees the 413 instead of a reset connection.
DRAIN_BYTES = 8 * 1024 * 1024
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class BadRequest(ValueError):
    """400: the body cannot be used; the message says why."""


class TooLarge(ValueError):
    """413: the body is larger than the plugin accepts."""


def clip(value: object, limit: int = 80, quote: bool = True) -> str:
    """`value` for a message or a log line, cut to `limit` characters (a 1 MB name stays short); repr'd when
    `quote`, so that control characters show as escapes."""
    text = value if isinstance(value, str) else str(value)
    cut = text if len(text) <= limit else text[:limit]
    shown = repr(cut) if quote else cut
    return shown if cut is text else f"{shown}… ({len(text)} characters)"


def _size(n: int) -> str:
    return f"{n} bytes ({n / 1048576:.1f} MiB)" if n >= 1048576 else f"{n} bytes"


def too_large(size: int, limit: int, exact: bool = True) -> TooLarge:
    got = _size(size) if exact else f"more than {_size(size)}"
    return TooLarge(f"the request body is too large: {got}; the limit is {_size(limit)} "
                    "(max_body_bytes in the plugin's configuration)")


async def read_limited(declared: str | None, stream: AsyncIterator[bytes], limit: int) -> bytes:
    """The body, or TooLarge. `declared` is the Content-Length header (trusted only to refuse early)."""
    if declared is not None and declared.strip().isdigit() and int(declared) > limit + DRAIN_BYTES:
        raise too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > limit + DRAIN_BYTES:
            raise too_large(size, limit, exact=False)
    if size > limit:
        raise too_large(size, limit)
    return b"".join(chunks)


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def too_deep(text: str, limit: int) -> bool:
    """Whether the JSON text nests arrays/objects deeper than `limit` (or is unbalanced: then json.loads says
    what is wrong). Regular expressions only, no recursion: strings out, then brackets only, then one pass per
    level removing the innermost pairs; a pod nests about ten levels, so this costs a few passes."""
    skeleton = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(limit):
        if not skeleton:
            return False
        shorter = _INNERMOST.sub("", skeleton)
        if len(shorter) == len(skeleton):
            return True
        skeleton = shorter
    return bool(skeleton)


def _no_constant(name: str) -> Any:
    raise BadRequest(f"the request body contains {name}, which is not JSON (JavaScript only)")


def decode_json(body: bytes, what: str, max_depth: int) -> Any:
    """Parse `body` as UTF-8 JSON; `what` names what was expected (for the message)."""
    if body.startswith(codecs.BOM_UTF8):
        body = body[len(codecs.BOM_UTF8):]
    if b"\x00" in body:  # never in JSON text; UTF-16/32 text of ASCII is full of them (and is valid UTF-8)
        raise BadRequest(f"the request body is not UTF-8 text (it holds NUL bytes, as UTF-16 or UTF-32 text does); "
                         f"send {what} as JSON encoded in UTF-8")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"the request body is not UTF-8 text (byte {body[exc.start]:#04x} at offset {exc.start} is not valid "
            f"UTF-8); send {what} as JSON encoded in UTF-8") from None
    if not text.strip():
        raise BadRequest(f"the request body is empty; expected {what} as JSON")
    deep = too_deep(text, max_depth)
    try:
        raw = json.loads(text, parse_constant=_no_constant)
    except BadRequest:
        raise
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno});"
                         f" expected {what}") from None
    except RecursionError:
        raise BadRequest(f"the request body nests arrays/objects deeper than {max_depth} levels; "
                         f"expected {what}") from None
    except ValueError:  # an integer literal with thousands of digits
        raise BadRequest(f"the request body holds a number with too many digits; expected {what}") from None
    if deep:
        raise BadRequest(f"the request body nests arrays/objects deeper than {max_depth} levels; expected {what}")
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(raw, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("the request body holds a \\u escape of half a UTF-16 surrogate pair, which is no "
                             "character; send text as UTF-8") from None
    return raw
