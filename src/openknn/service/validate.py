"""The checks SageMaker makes on the server (botocore checks only required members and types):
name patterns and lengths, enums, ARNs and S3 URIs, in SageMaker's words — ``1 validation
error detected: Value 'x' at 'resourceConfig.instanceType' failed to satisfy constraint:
Member must satisfy enum value set: [...]`` (spec sagemaker-api.md §4). Instance types come
from botocore's own service model where botocore is installed, so they follow AWS's list."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from openknn.service.api import validation
from openknn.service.state import Doc

NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
S3_URI = re.compile(r"^(https|s3)://([^/]+)/?(.*)$")
MAX_RESULTS = 100


def _constraint(value: object, where: str, constraint: str) -> Exception:
    return validation(f"1 validation error detected: Value {value!r} at '{where}' failed to "
                      f"satisfy constraint: {constraint}")


def resource_name(value: object, where: str) -> str:
    """A job, endpoint or config name: letters, digits and inner hyphens, 1 to 63."""
    if not isinstance(value, str) or not NAME.match(value):
        raise _constraint(value, where, "Member must satisfy regular expression pattern: "
                          "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62} (letters, digits and hyphens, "
                          "at most 63, no '_')")
    return value


def required_str(body: dict[str, Any], name: str, where: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise validation(f"{where}.{name[0].lower() + name[1:]} is required")
    return value


def is_list(value: object, where: str) -> None:
    if not isinstance(value, list):
        raise validation(f"{where} must be a list")


def enum(value: object, where: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise _constraint(value, where, "Member must satisfy enum value set: "
                          f"[{', '.join(allowed)}]")
    return str(value)


def role_arn(value: object, where: str) -> str:
    if not isinstance(value, str) or not ROLE_ARN.match(value):
        raise _constraint(value, where, "Member must satisfy regular expression pattern: "
                          "^arn:aws[a-z\\-]*:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$ "
                          "(for example arn:aws:iam::000000000000:role/SageMakerRole)")
    return value


def s3_uri(value: str, where: str) -> str:
    if not S3_URI.match(value) or not value.startswith("s3://"):
        raise _constraint(value, where, "Member must satisfy regular expression pattern: "
                          "^(https|s3)://([^/]+)/?(.*)$ (openknn reads s3:// URIs)")
    return value


@functools.cache
def _instance_types(shape: str) -> tuple[str, ...]:
    """The enum of ``shape`` in botocore's SageMaker model; () without botocore."""
    try:
        import botocore.session
    except ImportError:
        return ()
    model = botocore.session.get_session().get_service_model("sagemaker")
    return tuple(model.shape_for(shape).enum)


def instance_type(value: object, where: str, shape: str) -> str:
    """An instance type SageMaker knows for ``shape`` (TrainingInstanceType,
    ProductionVariantInstanceType, TransformInstanceType)."""
    allowed = _instance_types(shape)
    if allowed and value not in allowed:
        raise _constraint(value, where, f"Member must satisfy enum value set: "
                          f"[{', '.join(allowed)}]")
    if not allowed and not (isinstance(value, str) and re.fullmatch(r"ml\.[a-z0-9-]+\.\w+",
                                                                    value)):
        raise _constraint(value, where, "Member must be an ml.* instance type")
    return str(value)


def page(body: dict[str, Any], total: int) -> tuple[int, int]:
    """(start, size) of a List* page from ``NextToken`` and ``MaxResults``."""
    size = body.get("MaxResults", MAX_RESULTS)
    if not isinstance(size, int) or not 1 <= size <= MAX_RESULTS:
        raise _constraint(size, "maxResults", f"Member must have value between 1 and "
                          f"{MAX_RESULTS}")
    token = body.get("NextToken")
    if token is None:
        return 0, size
    if not str(token).isdigit() or int(token) > total:
        raise validation(f"NextToken {token!r} is not a token this service gave; pass back "
                         "the NextToken of the last page")
    return int(token), size


def listing(docs: list[Doc], body: dict[str, Any], name_field: str, key: str,
            fields: tuple[str, ...], status_field: str | None = None,
            statuses: tuple[str, ...] = (), default_order: str = "Descending",
            ) -> dict[str, Any]:
    """A List* answer: NameContains, StatusEquals (where the kind has a status),
    CreationTimeAfter/Before, SortBy (Name, CreationTime, Status), SortOrder (default
    ``default_order``: ListTrainingJobs sorts Ascending, the other kinds Descending), and
    pages of MaxResults with NextToken, as the SageMaker API lists every kind."""
    contains = body.get("NameContains")
    if contains:
        docs = [d for d in docs if str(contains).lower() in d[name_field].lower()]
    status = body.get("StatusEquals")
    if status and status_field:
        enum(status, "statusEquals", statuses)
        docs = [d for d in docs if d[status_field] == status]
    if body.get("CreationTimeAfter") is not None:
        docs = [d for d in docs if d["CreationTime"] > float(body["CreationTimeAfter"])]
    if body.get("CreationTimeBefore") is not None:
        docs = [d for d in docs if d["CreationTime"] < float(body["CreationTimeBefore"])]
    sorts = ("Name", "CreationTime", "Status") if status_field else ("Name", "CreationTime")
    sort_by = enum(body.get("SortBy", "CreationTime"), "sortBy", sorts)
    sort_key = {"Name": name_field, "CreationTime": "CreationTime",
                "Status": status_field or name_field}[sort_by]
    order = enum(body.get("SortOrder", default_order), "sortOrder", ("Ascending", "Descending"))
    docs.sort(key=lambda d: d[sort_key], reverse=order == "Descending")
    start, size = page(body, len(docs))
    out: dict[str, Any] = {key: [{f: d[f] for f in fields if f in d}
                                 for d in docs[start:start + size]]}
    if start + size < len(docs):
        out["NextToken"] = str(start + size)
    return out
