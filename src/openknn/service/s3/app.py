"""The store's HTTP face: one starlette route that reads S3's path-style REST requests
(``/bucket/key`` with S3's query subresources) and answers as S3 does — status, headers and
XML. Requests are not authenticated: any SigV4-signed or unsigned request is served (a local
store, bound to 127.0.0.1 by whoever runs it). Subresources not implemented here answer S3's
``NotImplemented`` (501) rather than being mistaken for a plain GET or PUT.

Bodies stream: an upload goes to disk a block at a time through ``chunked.BodyReader`` (aws-chunked
framing, checksums), and a download streams from the opened blob, so memory is bounded by
``BLOCK`` whatever the object's size. The store's blocking file work runs in worker threads."""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import IO
from xml.sax.saxutils import escape

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from openknn.service.s3 import xml
from openknn.service.s3.chunked import BodyReader
from openknn.service.s3.codes import S3Error
from openknn.service.s3.store import (
    BLOCK,
    MIN_PART_SIZE,
    BlobWriter,
    Listing,
    Marker,
    ObjectInfo,
    Store,
    key_segments,
)

log = logging.getLogger(__name__)

MAX_XML_BODY = 4 << 20  # CompleteMultipartUpload of 10000 parts, Delete of 1000 long keys
STORED_HEADERS = ("cache-control", "content-disposition", "content-encoding",
                  "content-language", "expires")
OVERRIDES = {f"response-{h}": h for h in ("cache-control", "content-disposition",
                                          "content-encoding", "content-language",
                                          "content-type", "expires")}
SUBRESOURCES = frozenset((
    "accelerate", "acl", "analytics", "attributes", "cors", "encryption", "intelligent-tiering",
    "inventory", "legal-hold", "lifecycle", "logging", "metrics", "notification",
    "object-lock", "ownershipControls", "policy", "policyStatus", "publicAccessBlock",
    "replication", "requestPayment", "restore", "retention", "select", "tagging", "torrent",
    "versioning", "versions", "website", "versionId", "partNumber"))
_REGION = re.compile(r"Credential=[^/,]*/\d{8}/([^/,]+)/")
OWNER = ("75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a", "openknn")


def _http_date(t: float) -> str:
    return email.utils.formatdate(t, usegmt=True)


def _etag(value: str) -> str:
    return f'"{value}"'


def _not_implemented(what: str) -> S3Error:
    return S3Error("NotImplemented", f"A header or query you provided implies functionality "
                   f"that is not implemented: {what}.")


def _token(marker: Marker) -> str:
    raw = json.dumps([marker.value, marker.is_prefix]).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _untoken(token: str) -> Marker:
    try:
        value, is_prefix = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        return Marker(str(value), bool(is_prefix))
    except (ValueError, TypeError, UnicodeError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                      ArgumentName="continuation-token") from None


def _int_arg(request: Request, name: str, default: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer "
                      "range", ArgumentName=name, ArgumentValue=raw) from None
    if value < 0:
        raise S3Error("InvalidArgument", f"Argument {name} must be an integer between 0 and "
                      "2147483647", ArgumentName=name, ArgumentValue=raw)
    return min(value, high)


def _metadata(request: Request) -> tuple[str | None, dict[str, str], dict[str, str]]:
    """Content-Type, x-amz-meta-* and the other stored headers of a write request."""
    meta = {k[len("x-amz-meta-"):]: v for k, v in request.headers.items()
            if k.startswith("x-amz-meta-")}
    stored = {k: request.headers[k] for k in STORED_HEADERS if k in request.headers}
    if "content-encoding" in stored:
        rest = [e.strip() for e in stored["content-encoding"].split(",")
                if e.strip() and e.strip().lower() != "aws-chunked"]
        if rest:
            stored["content-encoding"] = ",".join(rest)
        else:
            del stored["content-encoding"]
    return request.headers.get("content-type"), meta, stored


def _iter_file(f: IO[bytes], start: int, length: int) -> Iterator[bytes]:
    try:
        f.seek(start)
        while length > 0:
            chunk = f.read(min(BLOCK, length))
            if not chunk:
                break
            length -= len(chunk)
            yield chunk
    finally:
        f.close()


def _range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a ``Range`` header as S3 reads it: one range; a malformed or
    multi-range header, or a reversed one, is ignored (the whole object, 200); a first byte
    past the end is InvalidRange (416)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, sep, last_s = spec.strip().partition("-")
    try:
        first = int(first_s) if first_s.strip() else None
        last = int(last_s) if last_s.strip() else None
    except ValueError:
        return None
    if not sep or (first is None and last is None):
        return None
    if (first is None and last == 0) or (first is not None and first >= size):
        raise S3Error("InvalidRange", "The requested range is not satisfiable",
                      RangeRequested=header, ActualObjectSize=str(size))
    if first is None:
        assert last is not None
        return max(size - last, 0), size - 1
    last = size - 1 if last is None else min(last, size - 1)
    return None if first > last else (first, last)


def _conditions(request: Request, info: ObjectInfo) -> int | None:
    """304 or 412 where the request's preconditions fail (RFC 7232's order), else None."""
    etag = _etag(info.etag)
    modified = int(info.last_modified)

    def since(name: str) -> int | None:
        raw = request.headers.get(name)
        parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        return int(parsed.timestamp()) if parsed is not None else None

    match = request.headers.get("if-match")
    if match is not None:
        tags = [t.strip() for t in match.split(",")]
        if "*" not in tags and etag not in tags and info.etag not in tags:
            return 412
    else:
        try:
            unmodified = since("if-unmodified-since")
        except (TypeError, ValueError):
            unmodified = None
        if unmodified is not None and modified > unmodified:
            return 412
    none_match = request.headers.get("if-none-match")
    if none_match is not None:
        tags = [t.strip() for t in none_match.split(",")]
        if "*" in tags or etag in tags or info.etag in tags:
            return 304
    else:
        try:
            modified_since = since("if-modified-since")
        except (TypeError, ValueError):
            modified_since = None
        if modified_since is not None and modified <= modified_since:
            return 304
    return None


def _object_headers(info: ObjectInfo) -> dict[str, str]:
    headers = {"etag": _etag(info.etag), "last-modified": _http_date(info.last_modified),
               "content-type": info.content_type, "accept-ranges": "bytes"}
    headers.update(info.headers)
    headers.update({f"x-amz-meta-{k}": v for k, v in info.metadata.items()})
    return headers


class S3App:
    """The request handlers over one ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def run(self, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    async def handle(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode("utf-8")
        path = raw.decode("latin-1").split("?", 1)[0].lstrip("/")
        bucket_q, _, key_q = path.partition("/")
        bucket = xml.unquote_path(bucket_q)
        key = xml.unquote_path(key_q)
        try:
            return await self.dispatch(request, bucket, key)
        except S3Error as e:
            return self.error(request, e, f"/{bucket}/{key}" if key else f"/{bucket}")
        except Exception:  # a bug or an OS failure: S3's 500, logged, never a dropped socket
            log.exception("S3 request failed: %s %s", request.method, request.url.path)
            return self.error(request, S3Error("InternalError", "We encountered an internal "
                                               "error. Please try again."), f"/{bucket}")

    @staticmethod
    def error(request: Request, err: S3Error, resource: str) -> Response:
        headers = {"x-amz-request-id": xml.request_id()}
        if request.method in ("PUT", "POST"):
            # the body may be unread (refused before it was read, or the client is still
            # waiting on ``Expect: 100-continue``): its bytes must not be read as the next
            # request on this connection, so the connection ends with this answer
            headers["connection"] = "close"
        if request.method == "HEAD":  # no body: botocore reads the status as the code
            return Response(b"", err.status, headers=headers)
        return Response(xml.error(err, resource), err.status, headers=headers,
                        media_type="application/xml")

    async def dispatch(self, request: Request, bucket: str, key: str) -> Response:
        q, method = request.query_params, request.method
        if not bucket:
            if method in ("GET", "HEAD"):
                return await self.list_buckets()
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against "
                          "this resource.")
        handler: Callable[[Request, str, str], Awaitable[Response]] | None = None
        unsupported = sorted(set(q.keys()) & SUBRESOURCES)
        if not key:
            if method == "GET" and "location" in q:
                handler = self.get_location
            elif method == "POST" and "delete" in q:
                handler = self.delete_objects
            elif "uploads" in q or unsupported:
                raise _not_implemented(", ".join(unsupported) or "uploads")
            else:
                handler = {"PUT": self.create_bucket, "HEAD": self.head_bucket,
                           "DELETE": self.delete_bucket, "GET": self.list_objects}.get(method)
        elif "uploadId" in q:
            if unsupported != ["partNumber"] and unsupported:
                raise _not_implemented(", ".join(unsupported))
            if method == "PUT" and "x-amz-copy-source" in request.headers:
                raise _not_implemented("UploadPartCopy")
            handler = {"PUT": self.upload_part, "GET": self.list_parts,
                       "POST": self.complete_upload, "DELETE": self.abort_upload}.get(method)
        elif unsupported:
            raise _not_implemented(", ".join(unsupported))
        elif method == "POST" and "uploads" in q:
            handler = self.create_upload
        elif method == "PUT" and "x-amz-copy-source" in request.headers:
            handler = self.copy_object
        else:
            handler = {"PUT": self.put_object, "GET": self.get_object,
                       "HEAD": self.get_object, "DELETE": self.delete_object}.get(method)
        if handler is None:
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against "
                          "this resource.")
        return await handler(request, bucket, key)

    # -- bodies --------------------------------------------------------------------------

    async def read_small(self, request: Request) -> bytes:
        """A request document (XML), checked like any body, refused past MAX_XML_BODY."""
        reader = BodyReader(request.headers)
        out = bytearray()
        async for chunk in request.stream():
            out += reader.feed(chunk)
            if len(out) > MAX_XML_BODY:
                raise S3Error("MalformedXML", "The XML you provided was too large.")
        reader.finish()
        return bytes(out)

    async def read_blob(self, request: Request, blob: BlobWriter) -> BodyReader:
        """The body into ``blob``, a block at a time, checked; the blob discarded on error."""
        reader = BodyReader(request.headers)
        buffered = bytearray()
        try:
            async for chunk in request.stream():
                buffered += reader.feed(chunk)
                if len(buffered) >= BLOCK:
                    data, buffered = bytes(buffered), bytearray()
                    await self.run(blob.write, data)
            reader.finish()
            await self.run(blob.write, bytes(buffered))
            await self.run(blob.finish)
        except BaseException:
            await self.run(blob.discard)
            raise
        return reader

    # -- buckets -------------------------------------------------------------------------

    async def list_buckets(self) -> Response:
        buckets = await self.run(self.store.list_buckets)
        assert isinstance(buckets, list)
        body = xml.doc("ListAllMyBucketsResult", [
            "<Owner>", xml.el("ID", OWNER[0]), xml.el("DisplayName", OWNER[1]), "</Owner>",
            "<Buckets>", *(f"<Bucket>{xml.el('Name', b.name)}"
                           f"{xml.el('CreationDate', xml.iso(b.created))}</Bucket>"
                           for b in buckets), "</Buckets>"])
        return Response(body, media_type="application/xml")

    async def create_bucket(self, request: Request, bucket: str, _key: str) -> Response:
        region = xml.parse_location(await self.read_small(request))
        if region is None:
            found = _REGION.search(request.headers.get("authorization", ""))
            region = found.group(1) if found else "us-east-1"
        await self.run(self.store.create_bucket, bucket, region)
        return Response(b"", headers={"location": f"/{bucket}"})

    async def head_bucket(self, request: Request, bucket: str, _key: str) -> Response:
        info = await self.run(self.store.head_bucket, bucket)
        region = getattr(info, "region", "us-east-1")
        return Response(b"", headers={"x-amz-bucket-region": region,
                                      "content-type": "application/xml"})

    async def get_location(self, request: Request, bucket: str, _key: str) -> Response:
        info = await self.run(self.store.head_bucket, bucket)
        region = getattr(info, "region", "us-east-1")
        text = "" if region == "us-east-1" else escape(region)
        body = (xml.HEAD + f'<LocationConstraint xmlns="{xml.NS}">{text}</LocationConstraint>')
        return Response(body.encode("utf-8"), media_type="application/xml")

    async def delete_bucket(self, request: Request, bucket: str, _key: str) -> Response:
        await self.run(self.store.delete_bucket, bucket)
        return Response(status_code=204)

    async def list_objects(self, request: Request, bucket: str, _key: str) -> Response:
        q = request.query_params
        v2 = q.get("list-type") == "2"
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter") or None
        max_keys = _int_arg(request, "max-keys", 1000, 1000)
        encode = q.get("encoding-type") == "url"
        if q.get("encoding-type") not in (None, "url"):
            raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                          ArgumentName="encoding-type")
        token = q.get("continuation-token") if v2 else None
        start = q.get("start-after") if v2 else q.get("marker")
        marker: Marker | None = None
        if token is not None:
            marker = _untoken(token)
        elif start:
            # V1's NextMarker is a common prefix where one ends a page: resume past it whole
            is_prefix = not v2 and delimiter is not None and start.endswith(delimiter)
            marker = Marker(start, is_prefix)
        listing = await self.run(self.store.list_objects, bucket, prefix=prefix,
                                 delimiter=delimiter, marker=marker, max_keys=max_keys)
        assert isinstance(listing, Listing)

        def u(value: str | None) -> str | None:
            return xml.url(value, encode) if encode else value

        parts = [xml.el("Name", bucket), xml.el("Prefix", u(prefix))]
        if v2:
            parts += [xml.el("Delimiter", u(delimiter)), xml.el("MaxKeys", max_keys),
                      xml.el("EncodingType", "url" if encode else None),
                      xml.el("KeyCount", len(listing.objects) + len(listing.prefixes)),
                      xml.el("IsTruncated", listing.truncated),
                      xml.el("ContinuationToken", token),
                      xml.el("NextContinuationToken",
                             _token(listing.next_marker) if listing.next_marker else None),
                      xml.el("StartAfter", u(start) if start and token is None else None)]
        else:
            parts += [xml.el("Marker", u(start or "")), xml.el("MaxKeys", max_keys),
                      xml.el("Delimiter", u(delimiter)),
                      xml.el("EncodingType", "url" if encode else None),
                      xml.el("IsTruncated", listing.truncated),
                      xml.el("NextMarker", u(listing.next_marker.value)
                             if listing.next_marker and delimiter else None)]
        for o in listing.objects:
            parts.append("<Contents>" + xml.el("Key", u(o.key))
                         + xml.el("LastModified", xml.iso(o.last_modified))
                         + xml.el("ETag", _etag(o.etag)) + xml.el("Size", o.size)
                         + xml.el("StorageClass", "STANDARD") + "</Contents>")
        for p in listing.prefixes:
            parts.append("<CommonPrefixes>" + xml.el("Prefix", u(p)) + "</CommonPrefixes>")
        return Response(xml.doc("ListBucketResult", parts), media_type="application/xml")

    async def delete_objects(self, request: Request, bucket: str, _key: str) -> Response:
        keys, quiet = xml.parse_delete(await self.read_small(request))
        await self.run(self.store.head_bucket, bucket)
        parts = []
        for key in keys:
            try:
                await self.run(self.store.delete_object, bucket, key)
                if not quiet:
                    parts.append(f"<Deleted>{xml.el('Key', key)}</Deleted>")
            except S3Error as e:
                parts.append(f"<Error>{xml.el('Key', key)}{xml.el('Code', e.code)}"
                             f"{xml.el('Message', e.message)}</Error>")
        return Response(xml.doc("DeleteResult", parts), media_type="application/xml")

    # -- objects -------------------------------------------------------------------------

    async def put_object(self, request: Request, bucket: str, key: str) -> Response:
        key_segments(key)  # refuse a bad key before reading its body
        content_type, meta, stored = _metadata(request)
        blob = await self.run(self.store.new_blob, bucket)
        assert isinstance(blob, BlobWriter)
        reader = await self.read_blob(request, blob)
        try:
            await self.run(self.store.commit_object, bucket, key, blob, size=reader.size,
                           etag=reader.md5, content_type=content_type, metadata=meta,
                           headers=stored, checksums=reader.checksums)
        except BaseException:
            await self.run(blob.discard)
            raise
        return Response(b"", headers={"etag": _etag(reader.md5), **reader.checksums})

    async def get_object(self, request: Request, bucket: str, key: str) -> Response:
        f: IO[bytes] | None = None
        if request.method == "HEAD":
            info = await self.run(self.store.head_object, bucket, key)
        else:
            opened = await self.run(self.store.open_object, bucket, key)
            assert isinstance(opened, tuple)
            info, f = opened
        assert isinstance(info, ObjectInfo)
        try:
            status = _conditions(request, info)
            headers = _object_headers(info)
            if status is not None:
                if status == 412:
                    raise S3Error("PreconditionFailed", "At least one of the pre-conditions "
                                  "you specified did not hold", Condition="If-Match")
                return Response(status_code=304, headers={
                    "etag": headers["etag"], "last-modified": headers["last-modified"]})
            for param, header in OVERRIDES.items():
                if param in request.query_params:
                    headers[header] = request.query_params[param]
            first, length, status = 0, info.size, 200
            spec = request.headers.get("range")
            wanted = _range(spec, info.size) if spec else None
            if wanted is not None:
                first, length, status = wanted[0], wanted[1] - wanted[0] + 1, 206
                headers["content-range"] = f"bytes {wanted[0]}-{wanted[1]}/{info.size}"
            headers["content-length"] = str(length)
        except BaseException:
            if f is not None:
                f.close()
            raise
        if f is None:
            return Response(b"", status, headers=headers)
        return StreamingResponse(_iter_file(f, first, length), status, headers=headers)

    async def delete_object(self, request: Request, bucket: str, key: str) -> Response:
        await self.run(self.store.delete_object, bucket, key)
        return Response(status_code=204)

    async def copy_object(self, request: Request, bucket: str, key: str) -> Response:
        source = request.headers["x-amz-copy-source"].split("?", 1)[0]
        src = xml.unquote_path(source).lstrip("/")
        src_bucket, _, src_key = src.partition("/")
        if not src_bucket or not src_key:
            raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and "
                          "key: sourcebucket/sourcekey", ArgumentName="x-amz-copy-source")
        directive = request.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "Unknown metadata directive.",
                          ArgumentName="x-amz-metadata-directive")
        if (src_bucket, src_key) == (bucket, key) and directive == "COPY":
            raise S3Error("InvalidRequest", "This copy request is illegal because it is trying "
                          "to copy an object to itself without changing the object's metadata, "
                          "storage class, website redirect location or encryption attributes.")
        replace = None
        if directive == "REPLACE":
            content_type, meta, stored = _metadata(request)
            replace = ObjectInfo(key=key, size=0, etag="", last_modified=0.0, blob="",
                                 content_type=content_type or "binary/octet-stream",
                                 metadata=meta, headers=stored)
        info = await self.run(self.store.copy_object, src_bucket, src_key, bucket, key,
                              replace=replace)
        assert isinstance(info, ObjectInfo)
        body = xml.doc("CopyObjectResult", [xml.el("LastModified", xml.iso(info.last_modified)),
                                            xml.el("ETag", _etag(info.etag))])
        return Response(body, media_type="application/xml")

    # -- multipart -----------------------------------------------------------------------

    async def create_upload(self, request: Request, bucket: str, key: str) -> Response:
        content_type, meta, stored = _metadata(request)
        upload_id = await self.run(self.store.create_upload, bucket, key,
                                   content_type=content_type, metadata=meta, headers=stored)
        assert isinstance(upload_id, str)
        body = xml.doc("InitiateMultipartUploadResult", [
            xml.el("Bucket", bucket), xml.el("Key", key), xml.el("UploadId", upload_id)])
        return Response(body, media_type="application/xml")

    async def upload_part(self, request: Request, bucket: str, key: str) -> Response:
        upload_id = request.query_params["uploadId"]
        raw = request.query_params.get("partNumber", "")
        try:
            number = int(raw)
        except ValueError:
            raise S3Error("InvalidArgument", "Part number must be an integer between 1 and "
                          "10000, inclusive", ArgumentName="partNumber",
                          ArgumentValue=raw) from None
        self.store.check_part_number(number)
        await self.run(self.store.get_upload, bucket, key, upload_id)
        blob = await self.run(self.store.new_blob, bucket)
        assert isinstance(blob, BlobWriter)
        reader = await self.read_blob(request, blob)
        try:
            await self.run(self.store.commit_part, bucket, key, upload_id, number, blob,
                           size=reader.size, etag=reader.md5)
        except BaseException:
            await self.run(blob.discard)
            raise
        return Response(b"", headers={"etag": _etag(reader.md5), **reader.checksums})

    async def list_parts(self, request: Request, bucket: str, key: str) -> Response:
        upload_id = request.query_params["uploadId"]
        after = _int_arg(request, "part-number-marker", 0, 10000)
        max_parts = _int_arg(request, "max-parts", 1000, 1000)
        parts = await self.run(self.store.list_parts, bucket, key, upload_id)
        assert isinstance(parts, list)
        rest = [p for p in parts if p.number > after]
        page, truncated = rest[:max_parts], len(rest) > max_parts
        body = [xml.el("Bucket", bucket), xml.el("Key", key), xml.el("UploadId", upload_id),
                xml.el("PartNumberMarker", after),
                xml.el("NextPartNumberMarker", page[-1].number if page else None),
                xml.el("MaxParts", max_parts), xml.el("IsTruncated", truncated),
                xml.el("StorageClass", "STANDARD")]
        body += ["<Part>" + xml.el("PartNumber", p.number)
                 + xml.el("LastModified", xml.iso(p.last_modified))
                 + xml.el("ETag", _etag(p.etag)) + xml.el("Size", p.size) + "</Part>"
                 for p in page]
        return Response(xml.doc("ListPartsResult", body), media_type="application/xml")

    async def complete_upload(self, request: Request, bucket: str, key: str) -> Response:
        upload_id = request.query_params["uploadId"]
        await self.run(self.store.get_upload, bucket, key, upload_id)
        requested = xml.parse_complete(await self.read_small(request))
        info = await self.run(self.store.complete_upload, bucket, key, upload_id, requested)
        assert isinstance(info, ObjectInfo)
        location = f"{request.url.scheme}://{request.url.netloc}/{bucket}/{key}"
        body = xml.doc("CompleteMultipartUploadResult", [
            xml.el("Location", location), xml.el("Bucket", bucket), xml.el("Key", key),
            xml.el("ETag", _etag(info.etag))])
        return Response(body, media_type="application/xml")

    async def abort_upload(self, request: Request, bucket: str, key: str) -> Response:
        await self.run(self.store.abort_upload, bucket, key, request.query_params["uploadId"])
        return Response(status_code=204)


def create_app(root: str | os.PathLike[str], *, min_part_size: int = MIN_PART_SIZE) -> Starlette:
    """The S3 store over the folder ``root`` as an ASGI app (mount it, or run it under
    uvicorn). ``min_part_size`` is S3's 5 MiB unless a test wants smaller parts."""
    handler = S3App(Store(root, min_part_size=min_part_size))
    methods = ["GET", "HEAD", "PUT", "POST", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", handler.handle, methods=methods)])
