"""S3's XML documents, written as strings (the shapes botocore's RestXML parser reads), and the
two request documents S3 receives (CompleteMultipartUpload, Delete) parsed with the standard
library. Listings honour ``encoding-type=url``, which botocore always asks for, so keys with
characters XML 1.0 cannot carry still list."""

from __future__ import annotations

import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from urllib.parse import quote, unquote_to_bytes
from xml.sax.saxutils import escape

from openknn.service.s3.codes import S3Error

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


def iso(t: float) -> str:
    """S3's timestamp in XML: UTC, milliseconds, ``Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def el(name: str, value: str | int | bool | None) -> str:
    """One element, its text escaped; None writes nothing."""
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = _NOT_XML.sub("\ufffd", str(value))  # XML 1.0 cannot carry NUL and most C0 bytes
    return f"<{name}>{escape(text)}</{name}>"


def doc(root: str, parts: Iterable[str]) -> bytes:
    return (HEAD + f'<{root} xmlns="{NS}">' + "".join(parts) + f"</{root}>").encode("utf-8")


def url(value: str | None, encode: bool) -> str | None:
    """A key or prefix as ``encoding-type=url`` writes it (botocore unquotes it back)."""
    return None if value is None or not encode else quote(value, safe="/")


def error(err: S3Error, resource: str) -> bytes:
    fields = "".join(el(k, v) for k, v in err.fields.items())
    return (HEAD + "<Error>" + el("Code", err.code) + el("Message", err.message) + fields
            + el("Resource", resource) + el("RequestId", request_id()) + "</Error>"
            ).encode("utf-8")


def request_id() -> str:
    return uuid.uuid4().hex[:16].upper()


def _children(body: bytes, root: str) -> ET.Element:
    try:
        tree = ET.fromstring(body)
    except ET.ParseError:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not "
                      "validate against our published schema") from None
    if _local(tree.tag) != root:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not "
                      "validate against our published schema")
    return tree


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _text(node: ET.Element, name: str) -> str | None:
    for child in node:
        if _local(child.tag) == name:
            return child.text or ""
    return None


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """CompleteMultipartUpload's (PartNumber, ETag) pairs, in the order sent."""
    tree = _children(body, "CompleteMultipartUpload")
    parts = []
    for node in tree:
        if _local(node.tag) != "Part":
            continue
        number, etag = _text(node, "PartNumber"), _text(node, "ETag")
        if number is None or etag is None or not number.strip().isdigit():
            raise S3Error("MalformedXML", "The XML you provided was not well-formed or did "
                          "not validate against our published schema")
        parts.append((int(number), etag))
    return parts


def parse_delete(body: bytes) -> tuple[list[str], bool]:
    """DeleteObjects' keys and its Quiet flag."""
    tree = _children(body, "Delete")
    keys = []
    for node in tree:
        if _local(node.tag) == "Object":
            key = _text(node, "Key")
            if key is None:
                raise S3Error("MalformedXML", "The XML you provided was not well-formed or "
                              "did not validate against our published schema")
            keys.append(key)
    if not keys or len(keys) > 1000:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not "
                      "validate against our published schema")
    return keys, (_text(tree, "Quiet") or "").strip().lower() == "true"


def parse_location(body: bytes) -> str | None:
    """CreateBucket's LocationConstraint, or None for an empty body (us-east-1)."""
    if not body.strip():
        return None
    tree = _children(body, "CreateBucketConfiguration")
    value = _text(tree, "LocationConstraint")
    return value.strip() if value else None


def unquote_path(value: str) -> str:
    """A percent-encoded path part (bucket or key) as text; invalid UTF-8 becomes U+FFFD."""
    return unquote_to_bytes(value).decode("utf-8", "replace")
