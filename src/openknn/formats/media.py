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


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type/subtype; a=b`` into the lower-cased type and its parameters."""
    head, *rest = value.split(";")
    media = head.strip().lower()
    params: dict[str, str] = {}
    for item in rest:
        key, sep, val = item.partition("=")
        if sep and key.strip():
            params[key.strip().lower()] = val.strip().strip('"')
    return ALIASES.get(media, media), params
