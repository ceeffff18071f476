"""The shape of a spawn's options, checked before JupyterHub stores anything of a spawn.

A REST body (`POST /hub/api/users/<user>/server`) or a submitted form becomes the server's `user_options`.
JupyterHub saves them in its database and creates the server's API token before the spawner sees them, so a body
that is not an object, an unknown key or an 8 MB value would be stored (and a non-object one fails afterwards with
a TraitError and a 500). `check_options` is called first, by the spawn API handler (api.py) and by the form's
`options_from_form` (spawner.py); what the options *mean* for this user (profile open to their groups, image,
queueable) is `profiles.check_choice`'s, later, in the spawner's start.

Only pure functions live here, so the rules are unit tested without a hub.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aifacility.spawner.profiles import IMAGE_OPTION, QUEUE_OPTION

PROFILE_OPTION = "profile"
KNOWN_OPTIONS = (PROFILE_OPTION, IMAGE_OPTION, QUEUE_OPTION)
# A body of the three options is a few hundred bytes; anything much larger is not a spawn request.
MAX_BODY_BYTES = 16 * 1024
# Profile and image names of a facility file are short slugs.
MAX_NAME_CHARS = 200
# How much of a value a message quotes: enough to recognise it, never the whole of a huge one.
QUOTE_CHARS = 60
EXAMPLE = '{"profile": "cpu-small", "image": "python", "queue": false}'


class OptionsRefused(ValueError):
    """Spawn options that cannot be used; `status` is the HTTP answer (400, or 413 for a body too large)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """`value` for a message: a repr of at most about `limit` characters, saying how long the whole is."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return f"'{text}'" if isinstance(value, str) else text
    shown = text[:limit]
    return (f"'{shown}...' ({len(text)} characters)" if isinstance(value, str)
            else f"{shown}... ({len(text)} characters)")


def _type_name(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def parse_body(body: bytes) -> dict[str, Any] | None:
    """The options of a spawn request's body; None for an empty body (JupyterHub then re-uses the options of the
    server's previous spawn). OptionsRefused when the body is too large, not JSON, or its options are bad."""
    if len(body) > MAX_BODY_BYTES:
        raise OptionsRefused(f"The spawn request's body is {len(body)} bytes; at most {MAX_BODY_BYTES} are "
                             f"accepted. Send only the options, e.g. {EXAMPLE}.", status=413)
    text = body.strip()
    if not text:
        return None
    try:
        value = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise OptionsRefused(f"The spawn options must be JSON in UTF-8, e.g. {EXAMPLE}.") from None
    except (ValueError, RecursionError) as e:
        detail = "nested too deeply" if isinstance(e, RecursionError) else quote(str(e), 120)
        raise OptionsRefused(f"The spawn options are not valid JSON ({detail}); send an object, "
                             f"e.g. {EXAMPLE}.") from None
    return check_options(value)


def check_options(options: object) -> dict[str, Any]:
    """`options` if they have the shape of a spawn's options, else OptionsRefused with what to send instead.

    An object with at most the keys profile (a name or null), image (a name or null) and queue (true or false).
    """
    if not isinstance(options, Mapping):
        raise OptionsRefused(f"The spawn options must be a JSON object, not {_type_name(options)} "
                             f"({quote(options)}); e.g. {EXAMPLE}, or {{}} for the default profile.")
    unknown = [k for k in options if k not in KNOWN_OPTIONS]
    if unknown:
        names = ", ".join(quote(k) for k in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5
                                                            else "")
        raise OptionsRefused(f"Unknown spawn option(s) {names}; the options are "
                             f"{', '.join(KNOWN_OPTIONS)}, e.g. {EXAMPLE}.")
    for key in (PROFILE_OPTION, IMAGE_OPTION):
        value = options.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise OptionsRefused(f"'{key}' must be a name (a string), not {_type_name(value)} ({quote(value)}).")
        if len(value) > MAX_NAME_CHARS:
            raise OptionsRefused(f"'{key}' is {len(value)} characters long; {key} names have at most "
                                 f"{MAX_NAME_CHARS} ({quote(value)}).")
    queue = options.get(QUEUE_OPTION, False)
    if not isinstance(queue, bool):
        raise OptionsRefused(f"'queue' must be true or false (a JSON boolean), not {_type_name(queue)} "
                             f"({quote(queue)}).")
    return dict(options)


def options_from_form_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The user_options of KubeSpawner's form data (`{"profile": "gpu-t4", "image": "ml", "queue": "true"}`):
    the queue checkbox, sent only when ticked, becomes a boolean; the rest is checked like a REST body."""
    options = dict(fields)
    if QUEUE_OPTION in options:
        value = options[QUEUE_OPTION]
        if isinstance(value, str) and value.strip().lower() in ("on", "true", "yes", "1"):
            options[QUEUE_OPTION] = True
        elif isinstance(value, str) and value.strip().lower() in ("", "off", "false", "no", "0"):
            options[QUEUE_OPTION] = False
    return check_options(options)
