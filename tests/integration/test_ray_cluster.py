"""A real multi-node Ray cluster on one machine (Ray's own cluster_utils.Cluster, 2 nodes):
the job's host tasks land on both nodes and the model equals the in-process runner's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openknn.jobs import artifact, training
from openknn.jobs.runner import LocalRunner

from .test_distributed_training import data, spec  # noqa: F401  (the fixture)

pytestmark = pytest.mark.ray


def node_of(_: int) -> str:
    """The node a host task ran on; it holds its one CPU for a second, so with one CPU per
    node the two tasks cannot both run on the same node."""
    import time

    import ray

    time.sleep(1.0)
    return str(ray.get_runtime_context().get_node_id())


@pytest.fixture
def cluster() -> Iterator[Any]:
    """Ray's own test Cluster, two nodes of one CPU; Ray in this process is shut down before it
    starts and after the test, then the cluster."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    two = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        two.add_node(num_cpus=1)
        two.wait_for_nodes()
        yield two
    finally:
        ray.shutdown()
        two.shutdown()


def test_two_node_cluster(cluster: Any, data: Path, tmp_path: Path) -> None:  # noqa: F811
    import ray

    from openknn.distributed.runner import RayRunner

    runner = RayRunner(address=cluster.address)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    nodes = runner.map(node_of, [(0,), (1,)])
    assert len(set(nodes)) == 2  # one host task on each node
    remote = training.run(spec(data, tmp_path / "cluster", 2), runner)
    ray.shutdown()
    local = training.run(spec(data, tmp_path / "local", 2), LocalRunner())
    assert artifact.model_bytes(remote.model) == artifact.model_bytes(local.model)


@pytest.mark.parametrize("num_cpus", [None, 2])
def test_a_job_without_an_address_starts_its_own_instance_beside_a_running_cluster(
        cluster: Any, num_cpus: int | None) -> None:
    """A cluster on this machine (here Ray's test Cluster, which records its address in
    /tmp/ray/ray_current_cluster as `ray start` does) is not joined by a job given no
    address: the job starts its own one-node instance, with its own CPUs, and shuts only that
    down. Before this, a bare ray.init() joined the recorded cluster, and a job running beside
    this test died with it ("the node it was running on is dead"), and a runner given
    num_cpus was refused ("When connecting to an existing cluster, num_cpus ... must not be
    provided")."""
    from openknn.distributed import connect

    joined, owns = connect(num_cpus=num_cpus)
    try:
        assert owns
        assert joined.get_runtime_context().gcs_address != cluster.address
        cpus = [n["Resources"]["CPU"] for n in joined.nodes() if n["Alive"]]
        assert len(cpus) == 1 and (num_cpus is None or cpus == [num_cpus])
    finally:
        joined.shutdown()
    assert len([n for n in cluster.list_all_nodes() if n.remaining_processes_alive()]) == 2


def test_address_auto_joins_the_recorded_cluster_and_leaves_it_running(cluster: Any) -> None:
    """`--ray-address auto` (docs/distributed.md) is the way to ask for the cluster on this
    machine: the job joins it, does not own it, and sees both its nodes."""
    from openknn.distributed import connect

    joined, owns = connect("auto")
    try:
        assert not owns
        assert joined.get_runtime_context().gcs_address == cluster.address
        assert len([n for n in joined.nodes() if n["Alive"]]) == 2
    finally:
        joined.shutdown()
    assert len([n for n in cluster.list_all_nodes() if n.remaining_processes_alive()]) == 2
