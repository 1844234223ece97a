"""S3 throughput of a RecordIO-protobuf channel (~200 MB) in openknn's embedded S3 store beside
the same file on local disk, in one run (issue 12).

A channel of float32 features and float32 labels is written with ``write_numpy_to_dense_tensor``
into a temporary directory; the embedded store (``openknn.service.s3.create_app``) runs under
uvicorn in a thread of this process on a free 127.0.0.1 port, its root in the same temporary
directory (``--moto`` adds moto's ThreadedMotoServer as a second server). Printed, median of
``--repeats``, the repeats interleaved so that the machine's noise falls on every row alike:

- upload: boto3's transfer manager (``upload_file``, TransferConfig multipart threshold and
  chunk ``--chunk-mib``) beside a local copy of the file (``shutil.copyfile`` + fsync, as the
  store fsyncs what it receives);
- raw reads in ``--block-mib`` blocks: the local file (page cache warm, and once with its pages
  dropped by ``posix_fadvise``, best effort), the object through s3fs as the training job opens
  channels (``list_channel`` + ``open_binary`` on the ``s3://`` URI, ``AWS_ENDPOINT_URL`` set),
  and boto3 ``get_object`` streamed with ``iter_chunks``;
- the training job's channel decode, ``openknn.jobs.data.iter_blocks`` (RecordIO decode, NaN and
  label checks, ``mini_batch_size`` blocks) over the local directory and over the ``s3://``
  prefix.

The server's copy of the object is on the same disk and as warm in the page cache as the local
file, so "x local" is the cost of HTTP, S3 and the server, not of the disk; client and server
share this process's CPUs (and GIL).

    .venv/bin/python benchmarks/s3_throughput.py [--mb 200] [--dim 100] [--repeats 3]
        [--block-mib 1] [--chunk-mib 8] [--concurrency 10] [--moto]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import s3fs
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the servers the S3 tests use
from tests.s3_servers import moto_s3 as moto_server  # noqa: E402
from tests.s3_servers import store_s3 as store_server  # noqa: E402

from openknn.jobs.data import Channel, iter_blocks  # noqa: E402
from openknn.jobs.storage import list_channel, open_binary  # noqa: E402
from openknn.sdk import write_numpy_to_dense_tensor  # noqa: E402

BUCKET = "bench"
KEY = "train/train.pbr"
MIB = 1 << 20
WRITE_ROWS = 50_000  # rows per write_numpy_to_dense_tensor call: bounded memory
MINI_BATCH = 5000  # the mini_batch_size hyperparameter's default
ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
       "AWS_DEFAULT_REGION": "us-east-1"}
UNSET = ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN")


@contextlib.contextmanager
def aws_env(endpoint: str) -> Iterator[None]:
    """Point boto3 and s3fs (through botocore) at ``endpoint``; restore the environment after.
    s3fs caches its filesystems by constructor arguments, not by environment: cleared here,
    and collected at once so that no other thread's event loop runs their finalizers."""
    saved = {name: os.environ.get(name) for name in (*ENV, *UNSET, "AWS_ENDPOINT_URL")}
    for name in UNSET:
        os.environ.pop(name, None)
    os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        gc.collect()  # their finalizers close their sessions here, not in uvicorn's loop
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def write_channel(path: Path, rows: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        for lo in range(0, rows, WRITE_ROWS):
            n = min(WRITE_ROWS, rows - lo)
            features = rng.standard_normal((n, dim), dtype=np.float32)
            labels = rng.integers(0, 10, n).astype(np.float32)
            write_numpy_to_dense_tensor(f, features, labels)
        f.flush()
        os.fsync(f.fileno())  # clean pages, so that posix_fadvise can drop them


def bytes_per_record(dim: int) -> int:
    import io

    out = io.BytesIO()
    write_numpy_to_dense_tensor(out, np.zeros((1, dim), np.float32), np.zeros(1, np.float32))
    return len(out.getvalue())


def filesystem_of(path: Path) -> str:
    """The file system type and device ``path`` is on, from /proc/mounts (Linux)."""
    best, found = "", "unknown file system"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            device, point, kind = line.split()[:3]
            inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, found = point, f"{kind} ({device})"
    return found


def read_stream(stream: Any, block: int) -> int:
    total = 0
    while data := stream.read(block):  # bounded: the stream ends
        total += len(data)
    return total


def read_local(path: Path, block: int, drop_cache: bool = False) -> int:
    with open(path, "rb", buffering=0) as f:
        if drop_cache:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return read_stream(f, block)


def read_s3fs(location: str, block: int) -> int:
    (file,) = list_channel(location)
    with open_binary(file) as stream:
        return read_stream(stream, block)


def read_boto3(client: Any, block: int) -> int:
    body = client.get_object(Bucket=BUCKET, Key=KEY)["Body"]
    total = sum(len(chunk) for chunk in body.iter_chunks(block))
    body.close()
    return total


def decode(location: str, dim: int) -> int:
    return sum(len(b) for b in iter_blocks(Channel("train", location), dim, MINI_BATCH))


def copy_local(src: Path, dst: Path) -> int:
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())
    size = dst.stat().st_size
    dst.unlink()
    return size


def upload(client: Any, path: Path, config: TransferConfig) -> int:
    client.upload_file(str(path), BUCKET, KEY, Config=config)
    return int(client.head_object(Bucket=BUCKET, Key=KEY)["ContentLength"])


def sha256_of(stream: Any) -> str:
    digest = hashlib.sha256()
    while data := stream.read(8 * MIB):
        digest.update(data)
    return digest.hexdigest()


class Row:
    """One measurement: its label, where it reads, the baseline row it is compared with."""

    def __init__(self, what: str, where: str, fn: Callable[[], int], expect: int,
                 baseline: Row | None, section: str) -> None:
        self.what, self.where, self.fn, self.expect = what, where, fn, expect
        self.baseline, self.section = baseline, section
        self.times: list[float] = []

    def run(self) -> None:
        start = time.perf_counter()
        got = self.fn()
        self.times.append(time.perf_counter() - start)
        if got != self.expect:
            raise RuntimeError(f"{self.what} ({self.where}): got {got:,}, expected {self.expect:,}")

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=200.0, help="channel size, MB (1e6 bytes)")
    parser.add_argument("--dim", type=int, default=100, help="float32 features per record")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-mib", type=float, default=1.0, help="raw read block, MiB")
    parser.add_argument("--chunk-mib", type=int, default=8,
                        help="TransferConfig multipart_threshold and multipart_chunksize, MiB")
    parser.add_argument("--concurrency", type=int, default=10,
                        help="TransferConfig max_concurrency (boto3's default: 10)")
    parser.add_argument("--moto", action="store_true", help="also moto's ThreadedMotoServer")
    args = parser.parse_args()
    if args.repeats < 1 or args.mb <= 0 or args.dim < 1 or args.block_mib <= 0:
        parser.error("--repeats, --mb, --dim and --block-mib must be positive")
    block = max(1, int(args.block_mib * MIB))
    per_record = bytes_per_record(args.dim)
    rows = max(1, int(args.mb * 1e6) // per_record)
    config = TransferConfig(multipart_threshold=args.chunk_mib * MIB,
                            multipart_chunksize=args.chunk_mib * MIB,
                            max_concurrency=args.concurrency)
    client_config = Config(connect_timeout=10, read_timeout=120,
                           retries={"total_max_attempts": 1}, max_pool_connections=32)

    with tempfile.TemporaryDirectory(prefix="openknn-s3bench-") as tmp:
        root = Path(tmp)
        path = root / "channel" / "train.pbr"
        start = time.perf_counter()
        write_channel(path, rows, args.dim)
        write_s = time.perf_counter() - start
        size = path.stat().st_size
        mb = size / 1e6
        local_dir = str(path.parent)

        copy = Row("local copy (copyfile + fsync)", "local",
                   lambda: copy_local(path, root / "copy.pbr"), size, None, "upload")
        warm = Row(f"bytes, {args.block_mib:g} MiB reads (page cache warm)", "local",
                   lambda: read_local(path, block), size, None, "read")
        cold = Row(f"bytes, {args.block_mib:g} MiB reads, pages dropped*", "local",
                   lambda: read_local(path, block, drop_cache=True), size, warm, "read")
        local_decode = Row(f"decode, iter_blocks ({MINI_BATCH}-record blocks)", "local",
                           lambda: decode(local_dir, args.dim), rows, None, "decode")
        rows_by_server: dict[str, list[Row]] = {}
        servers: list[tuple[str, Callable[[], contextlib.AbstractContextManager[str]]]] = [
            ("store", lambda: store_server(root / "store"))]
        if args.moto:
            servers.append(("moto", moto_server))

        with contextlib.ExitStack() as stack:
            endpoints = {name: stack.enter_context(start_server()) for name, start_server
                         in servers}
            clients = {}
            for name, endpoint in endpoints.items():
                with aws_env(endpoint):
                    clients[name] = boto3.client("s3", config=client_config)
                    clients[name].create_bucket(Bucket=BUCKET)
                uri = f"s3://{BUCKET}/{KEY.rsplit('/', 1)[0]}/"
                c = clients[name]
                rows_by_server[name] = [
                    Row("boto3 upload_file (transfer manager)", name,
                        lambda c=c: upload(c, path, config), size, copy, "upload"),
                    Row(f"bytes, {args.block_mib:g} MiB reads, s3fs open_binary", name,
                        lambda u=uri: read_s3fs(u, block), size, warm, "read"),
                    Row(f"bytes, {args.block_mib:g} MiB iter_chunks, boto3 get_object", name,
                        lambda c=c: read_boto3(c, block), size, warm, "read"),
                    Row(f"decode, iter_blocks ({MINI_BATCH}-record blocks)", name,
                        lambda u=uri: decode(u, args.dim), rows, local_decode, "decode"),
                ]
            for name, client in clients.items():  # untimed: the reads' object, and warm-ups
                with aws_env(endpoints[name]):
                    upload(client, path, config)
            local_rows = [copy, warm, cold, local_decode]
            for repeat in range(args.repeats):
                for row in local_rows:
                    row.run()
                for name, server_rows in rows_by_server.items():
                    with aws_env(endpoints[name]):
                        # s3fs's first call (after aws_env) sets up its session: untimed
                        list_channel(f"s3://{BUCKET}/{KEY}")
                        for row in server_rows:
                            row.run()
                        if repeat == 0:  # the bytes that came back are the file's
                            with open(path, "rb") as f:
                                expected = sha256_of(f)
                            (file,) = list_channel(f"s3://{BUCKET}/{KEY}")
                            with open_binary(file) as stream:
                                if sha256_of(stream) != expected:
                                    raise RuntimeError(f"{name}: s3fs read other bytes")

        print(f"channel: {rows:,} records x {args.dim} float32 + float32 label, {per_record} "
              f"bytes each, {mb:.1f} MB in one file (written in {write_s:.1f} s)")
        print(f"temp dir on {filesystem_of(root)}; servers on 127.0.0.1 in this process "
              f"({', '.join(endpoints)}); median of {args.repeats}, repeats interleaved")
        print(f"TransferConfig: multipart_threshold = multipart_chunksize = {args.chunk_mib} MiB, "
              f"max_concurrency {args.concurrency}")
        print()
        all_rows = local_rows + [r for rs in rows_by_server.values() for r in rs]
        header = f"{'':<46}{'where':<7}{'seconds':>9}{'MB/s':>9}{'x local s':>11}"
        for section in ("upload", "read", "decode"):
            print(f"{section:<46}" + header[46:])
            for row in (r for r in all_rows if r.section == section):
                ratio = "" if row.baseline is None else f"{row.seconds / row.baseline.seconds:.2f}"
                extra = f"  ({rows / row.seconds:,.0f} records/s)" if section == "decode" else ""
                print(f"{row.what:<46}{row.where:<7}{row.seconds:>9.3f}{mb / row.seconds:>9.0f}"
                      f"{ratio:>11}{extra}")
            print()
        print("x local s: seconds over the local row of the section (upload: the local copy; "
              "read: the warm read).\nPage cache: the local file was just written and is read "
              "again, so the warm row reads memory; the server's copy is on the same disk and\n"
              "as warm, so the ratios are the cost of HTTP, S3 and the server, not of the disk. "
              "*pages dropped: posix_fadvise(DONTNEED)\nbefore each read, best effort (a VM's "
              "host may still cache the disk).")


if __name__ == "__main__":
    main()
