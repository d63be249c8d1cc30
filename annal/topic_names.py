"""Topic name rules, the same as Kafka's: 1..249 characters from [a-zA-Z0-9._-], and neither
"." nor "..".

The name becomes part of a directory name under the broker's data dir (``<topic>-<partition>``),
so these rules are what keeps a request from naming a path outside it: no "/", no NUL, no
".." component, and short enough that ``<topic>-<partition>`` fits in a 255-byte file name.
Pure functions; thread-safe.
"""

from __future__ import annotations

import re

from annal.errors import InvalidTopicError

__all__ = ["MAX_TOPIC_NAME_LENGTH", "is_valid_topic_name", "validate_topic_name"]

MAX_TOPIC_NAME_LENGTH = 249
_LEGAL = re.compile(r"[a-zA-Z0-9._-]+\Z")


def is_valid_topic_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_TOPIC_NAME_LENGTH
        and name not in (".", "..")
        and _LEGAL.match(name) is not None
    )


def validate_topic_name(name: object) -> str:
    """Return ``name`` if it is a legal topic name, else raise ``InvalidTopicError``."""
    if is_valid_topic_name(name):
        return name  # type: ignore[return-value]
    if not isinstance(name, str):
        raise InvalidTopicError(f"topic name must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidTopicError("topic name is empty")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise InvalidTopicError(
            f"topic name is {len(name)} characters long; the limit is {MAX_TOPIC_NAME_LENGTH}"
        )
    if name in (".", ".."):
        raise InvalidTopicError(f"topic name {name!r} is not allowed")
    bad = sorted({c for c in name if not _LEGAL.match(c)})
    raise InvalidTopicError(
        f"topic name {name[:60]!r} contains illegal characters {''.join(bad)[:20]!r}; "
        "only ASCII letters, digits, '.', '_' and '-' are allowed"
    )
