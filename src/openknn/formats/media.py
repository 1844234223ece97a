"""Media types: the names openknn speaks, and parsing of Content-Type / Accept values."""

from __future__ import annotations

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
RECORDIO = "application/x-recordio-protobuf"

# Aliases clients send for the same formats.
ALIASES = {
    "application/x-recordio": RECORDIO,
    "application/json-lines": JSONLINES,
    "application/x-jsonlines": JSONLINES,
    "application/jsonl": JSONLINES,
}

# The longest Content-Type / Accept value read: real ones are tens of characters, and a
# longer one is refused before it is split (parsing is linear, but 8 MB is still 8 MB).
MAX_CONTENT_TYPE_CHARS = 1024
MAX_ACCEPT_CHARS = 4096


def split_media_type(value: str) -> tuple[str, list[tuple[str, str]]]:
    """``type/subtype; a=b; a=c`` as the lower-cased, de-aliased type and its parameters in
    order (names lower-cased, values unquoted, repeats kept). One pass over ``value``."""
    head, *rest = value.split(";")
    media = head.strip().lower()
    params: list[tuple[str, str]] = []
    for item in rest:
        key, sep, val = item.partition("=")
        if sep and key.strip():
            params.append((key.strip().lower(), val.strip().strip('"')))
    return ALIASES.get(media, media), params


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type/subtype; a=b`` into the lower-cased type and its parameters (the last of
    a repeated one wins)."""
    media, params = split_media_type(value)
    return media, dict(params)


def shown(value: str, limit: int = 80) -> str:
    """A header value for an error message: its repr, cut to about ``limit`` characters."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"
