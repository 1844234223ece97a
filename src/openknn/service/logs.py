"""The CloudWatch Logs calls the SageMaker SDKs make (spec sagemaker-api.md §6), over the
service's state: DescribeLogStreams, GetLogEvents and FilterLogEvents, with the paging rules
the SDKs' loops depend on — DescribeLogStreams gives ``nextToken`` only while more streams
remain (SDK v2 loops on its presence), and GetLogEvents always gives ``nextForwardToken``, the
same token again with no events once a stream is read to its end (both SDKs page until an empty
page), and FilterLogEvents gives ``nextToken`` with every page that holds events and none with
an empty one (CloudWatch's own contract: no token, no more pages; SDK v3's deploy, and v2's
``live_logging``, print only the events of pages that carry a token). Tokens are ``f/<id>`` /
``b/<id>``: the event id the page ends or starts at."""

from __future__ import annotations

from typing import Any

from openknn.service.api import ApiError, Caller, Handler
from openknn.service.state import LogEvent, State

MAX_EVENTS = 10000
MAX_STREAMS = 50


def _not_found(what: str) -> ApiError:
    return ApiError("ResourceNotFoundException", f"The specified {what} does not exist.")


def _int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or not low <= value <= high:
        raise ApiError("InvalidParameterException",
                       f"{name} {value!r}: give an integer from {low} to {high}")
    return value


def _token(body: dict[str, Any], name: str = "nextToken") -> tuple[str, int] | None:
    token = body.get(name)
    if token is None:
        return None
    kind, _, number = str(token).partition("/")
    if kind not in ("f", "b", "s") or not number.isdigit():
        raise ApiError("InvalidParameterException", f"{name} {token!r} is not a token this "
                       "service gave; pass back the token of the last page")
    return kind, int(number)


def _group(state: State, body: dict[str, Any]) -> str:
    group = body.get("logGroupName")
    if not isinstance(group, str) or not group:
        raise ApiError("InvalidParameterException", "logGroupName is required")
    if not state.group_exists(group):
        raise _not_found("log group")
    return group


def _event(event: LogEvent, with_stream: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"timestamp": event.timestamp, "message": event.message,
                           "ingestionTime": event.ingestion_time}
    if with_stream:
        out.update(logStreamName=event.stream, eventId=str(event.id))
    return out


def describe_log_streams(state: State, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
    group = _group(state, body)
    prefix = str(body.get("logStreamNamePrefix", ""))
    limit = _int(body, "limit", MAX_STREAMS, 1, MAX_STREAMS)
    found = state.streams(group, prefix)
    if body.get("descending"):
        found.reverse()
    token = _token(body)
    start = token[1] if token else 0
    page = found[start:start + limit]
    out: dict[str, Any] = {"logStreams": [
        {"logStreamName": name, "creationTime": created,
         "arn": f"arn:aws:logs:{caller.region}:{caller.account}:log-group:{group}:"
                f"log-stream:{name}", "storedBytes": 0} for name, created in page]}
    if start + limit < len(found):
        out["nextToken"] = f"s/{start + limit}"
    return out


def get_log_events(state: State, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
    group = _group(state, body)
    stream = body.get("logStreamName")
    if not isinstance(stream, str) or stream not in {s for s, _ in state.streams(group, stream)}:
        raise _not_found("log stream")
    limit = _int(body, "limit", MAX_EVENTS, 1, MAX_EVENTS)
    token = _token(body)
    start, end = body.get("startTime"), body.get("endTime")
    after = token[1] if token and token[0] == "f" else 0
    if token is None and not body.get("startFromHead", False):
        # No token and not from the head: the stream's newest events, as CloudWatch gives.
        newest = state.events(group, [stream], 0, start, end, limit=1_000_000)[-limit:]
        after = newest[0].id - 1 if newest else 0
    events = state.events(group, [stream], after, start, end, limit)
    last = events[-1].id if events else after
    first = events[0].id if events else after
    return {"events": [_event(e) for e in events], "nextForwardToken": f"f/{last}",
            "nextBackwardToken": f"b/{first}"}


def _matches(pattern: str, message: str) -> bool:
    """CloudWatch's simplest filter patterns: every term (a word, or a "quoted phrase") must
    appear in the message; an empty pattern matches everything."""
    terms: list[str] = []
    rest = pattern.strip()
    while rest:
        if rest.startswith('"'):
            phrase, _, rest = rest[1:].partition('"')
            terms.append(phrase)
        else:
            word, _, rest = rest.partition(" ")
            terms.append(word)
        rest = rest.strip()
    return all(term in message for term in terms)


def filter_log_events(state: State, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
    group = _group(state, body)
    names = body.get("logStreamNames")
    prefix = str(body.get("logStreamNamePrefix", ""))
    streams = [s for s, _ in state.streams(group, prefix)]
    if names is not None:
        streams = [s for s in streams if s in set(names)]
    limit = _int(body, "limit", MAX_EVENTS, 1, MAX_EVENTS)
    token = _token(body)
    after = token[1] if token else 0
    pattern = str(body.get("filterPattern", ""))
    out: list[LogEvent] = []
    more = False
    while not more:
        batch = state.events(group, streams, after, body.get("startTime"), body.get("endTime"),
                             limit=MAX_EVENTS)
        if not batch:
            break
        for event in batch:
            if _matches(pattern, event.message):
                if len(out) == limit:  # one more matches: the page ends, and says so
                    more = True
                    break
                out.append(event)
            after = event.id
    page: dict[str, Any] = {"events": [_event(e, with_stream=True) for e in out],
                            "searchedLogStreams": [{"logStreamName": s,
                                                    "searchedCompletely": True}
                                                   for s in streams]}
    if out:  # more may match, or arrive: the next page starts after this one's last event
        page["nextToken"] = f"f/{out[-1].id}"
    return page


def handlers(state: State) -> dict[str, Handler]:
    def bind(function: Any) -> Handler:
        return lambda body, caller: function(state, body, caller)

    return {"DescribeLogStreams": bind(describe_log_streams),
            "GetLogEvents": bind(get_log_events),
            "FilterLogEvents": bind(filter_log_events)}
