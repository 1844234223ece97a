"""The service's SQLite state: resources survive reopening the file, a duplicate insert writes
nothing, a job left running by a service that died is Failed on the next start, the log
handlers page as the SDKs' loops need, and a log's tail is its newest events (the console's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openknn.service import logs
from openknn.service.api import ApiError, Caller
from openknn.service.state import State
from openknn.service.training_jobs import KIND, TrainingJobs, _transition


def test_resources_survive_reopening(tmp_path: Path) -> None:
    state = State(tmp_path)
    assert state.insert("model", "m1", {"ModelName": "m1", "n": 1})
    assert not state.insert("model", "m1", {"ModelName": "m1", "n": 2})  # nothing written
    state.insert("model", "m2", {"ModelName": "m2"})
    state.update("model", "m1", lambda d: {**d, "n": 3})
    state.close()
    again = State(tmp_path)
    assert [d["ModelName"] for d in again.resources("model")] == ["m1", "m2"]
    assert again.get("model", "m1") == {"ModelName": "m1", "n": 3}
    assert again.delete("model", "m2") and not again.delete("model", "m2")
    assert again.get("model", "nope") is None


def test_a_job_left_running_is_failed_on_the_next_start(tmp_path: Path) -> None:
    state = State(tmp_path)
    doc = {"TrainingJobName": "j", "TrainingJobStatus": "InProgress", "CreationTime": 100.0}
    _transition(doc, "Starting", 100.0)
    _transition(doc, "Training", 101.0)
    state.insert(KIND, "j", doc)
    state.insert(KIND, "done", {"TrainingJobName": "done", "TrainingJobStatus": "Completed"})
    state.close()
    TrainingJobs(State(tmp_path), tmp_path, dict).recover()
    job = State(tmp_path).get(KIND, "j")
    assert job is not None and job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"] == (
        "AlgorithmError: openknn up stopped while the job was running; the job did not finish "
        "and wrote no model. Run it again under a new name")
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]] == [
        "Starting", "Training", "Failed"]
    assert job["SecondaryStatusTransitions"][1]["EndTime"] >= 101.0
    assert State(tmp_path).get(KIND, "done") == {"TrainingJobName": "done",
                                                 "TrainingJobStatus": "Completed"}


def test_log_paging_follows_the_sdks_loops(tmp_path: Path) -> None:
    state = State(tmp_path)
    group = "/aws/sagemaker/TrainingJobs"
    caller = Caller()
    with pytest.raises(ApiError, match="The specified log group does not exist."):
        logs.describe_log_streams(state, {"logGroupName": group}, caller)
    for i in range(3):
        state.append_logs(group, f"job/algo-{i + 1}-1", [(1000 + i, f"line {i}")])
    state.append_logs(group, "job/algo-1-1", [(2000, "#test_score"), (3000, "last")])
    first = logs.describe_log_streams(state, {"logGroupName": group, "limit": 2}, caller)
    assert [s["logStreamName"] for s in first["logStreams"]] == ["job/algo-1-1", "job/algo-2-1"]
    rest = logs.describe_log_streams(state, {"logGroupName": group, "limit": 2,
                                             "nextToken": first["nextToken"]}, caller)
    assert [s["logStreamName"] for s in rest["logStreams"]] == ["job/algo-3-1"]
    assert "nextToken" not in rest

    body = {"logGroupName": group, "logStreamName": "job/algo-1-1", "startFromHead": True,
            "limit": 2}
    page = logs.get_log_events(state, body, caller)
    assert [e["message"] for e in page["events"]] == ["line 0", "#test_score"]
    page = logs.get_log_events(state, {**body, "nextToken": page["nextForwardToken"]}, caller)
    assert [e["message"] for e in page["events"]] == ["last"]
    end = logs.get_log_events(state, {**body, "nextToken": page["nextForwardToken"]}, caller)
    assert end["events"] == [] and end["nextForwardToken"] == page["nextForwardToken"]
    since = logs.get_log_events(state, {**body, "startTime": 2000, "limit": 100}, caller)
    assert [e["timestamp"] for e in since["events"]] == [2000, 3000]
    newest = logs.get_log_events(state, {"logGroupName": group, "logStreamName":
                                         "job/algo-1-1", "limit": 1}, caller)
    assert [e["message"] for e in newest["events"]] == ["last"]

    found = logs.filter_log_events(state, {"logGroupName": group, "logStreamNamePrefix":
                                           "job/", "filterPattern": '"#test_score"'}, caller)
    assert [(e["logStreamName"], e["message"]) for e in found["events"]] == [
        ("job/algo-1-1", "#test_score")]
    paged = logs.filter_log_events(state, {"logGroupName": group, "limit": 2}, caller)
    assert len(paged["events"]) == 2 and "nextToken" in paged
    more = logs.filter_log_events(state, {"logGroupName": group, "limit": 2,
                                          "nextToken": paged["nextToken"]}, caller)
    assert len(more["events"]) == 2 and "nextToken" in more
    last = logs.filter_log_events(state, {"logGroupName": group, "limit": 2,
                                          "nextToken": more["nextToken"]}, caller)
    # a page with events carries a token (SDK v3's deploy prints only such pages' events);
    # the page after the last event is empty and has none: the end, as CloudWatch says it
    assert len(last["events"]) == 1 and "nextToken" in last
    end = logs.filter_log_events(state, {"logGroupName": group, "limit": 2,
                                         "nextToken": last["nextToken"]}, caller)
    assert end["events"] == [] and "nextToken" not in end
    state.append_logs(group, "job/algo-2-1", [(4000, "later")])  # what arrives is next
    later = logs.filter_log_events(state, {"logGroupName": group, "limit": 2,
                                           "nextToken": last["nextToken"]}, caller)
    assert [e["message"] for e in later["events"]] == ["later"] and "nextToken" in later
    none = logs.filter_log_events(state, {"logGroupName": group, "filterPattern": "nowhere"},
                                  caller)
    assert none["events"] == [] and "nextToken" not in none
    with pytest.raises(ApiError, match="nextToken 'x' is not a token this service gave"):
        logs.get_log_events(state, {**body, "nextToken": "x"}, caller)


def test_a_logs_tail_is_its_newest_events_in_order(tmp_path: Path) -> None:
    state = State(tmp_path)
    state.append_logs("g", "a", [(i, f"a{i}") for i in range(5)])
    state.append_logs("g", "b", [(9, "b0")])
    state.append_logs("other", "a", [(9, "x")])
    events, before = state.tail("g", ["a", "b"], 3)
    assert [e.message for e in events] == ["a3", "a4", "b0"] and before == 3
    assert state.tail("g", ["b"], 10)[0][0].message == "b0"
    assert state.tail("g", [], 10) == ([], 0)
