"""The files `openknn env` and `openknn up` write (the SDK's config, the role metadata): each
is replaced whole, and two writers at once — two notebooks, or the SDK tests, which run side
by side — both succeed and leave one whole file (a shared temporary name made one of them
fail with FileNotFoundError, and skipped CI's SDK v2 test)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from openknn.service import env


def test_two_writers_at_once_each_leave_a_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "metadata" / "resource-metadata.json"
    errors: list[BaseException] = []

    def write(account: str) -> None:
        try:
            for _ in range(200):
                env.write_role_metadata(path, account)
        except BaseException as exc:  # the test's point: none
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(a,)) for a in ("111111111111",
                                                                   "222222222222")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    arn = json.loads(path.read_text())["ExecutionRoleArn"]
    assert arn in ("arn:aws:iam::111111111111:role/SageMakerRole",
                   "arn:aws:iam::222222222222:role/SageMakerRole")
    assert sorted(p.name for p in path.parent.iterdir()) == ["resource-metadata.json"]


def test_the_sdk_config_is_replaced_whole(tmp_path: Path) -> None:
    first = env.write_config(tmp_path, "bucket-one")
    second = env.write_config(tmp_path, "bucket-two")
    assert first == second and "DefaultS3Bucket: \"bucket-two\"" in second.read_text()
    assert [p.name for p in tmp_path.iterdir()] == [env.CONFIG_FILE]
