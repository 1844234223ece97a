"""An embedded S3-compatible object store: file-backed (objects survive restarts), served as
an ASGI app with path-style addressing (``http://127.0.0.1:PORT/bucket/key``).

It is a local store: any SigV4-signed or unsigned request is accepted and signatures are not
checked. ``create_app(root)`` is the entry point; ``store.Store`` is the same store without
HTTP. See docs/s3-store.md."""

from __future__ import annotations

from openknn.service.s3.app import create_app
from openknn.service.s3.store import Store

__all__ = ["Store", "create_app"]
