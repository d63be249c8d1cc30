"""Reading a ZooKeeper folder's children with their data, and the controller id, shared by the
broker's coordinator and the client's ZooKeeper metadata and group code.

A ``watch`` passed to a read is set by that same read (ZooKeeper sets a watch atomically with
the read that asks for it), so any change after the read fires it: a reader that re-reads when
its watch fires can never keep a state older than ZooKeeper's. kazoo's ``ChildrenWatch`` does
not give that after a session expiry: it re-reads on reconnection but skips its callback when
the children equal those it saw before the outage, even if its owner read something else
meanwhile (how a broker kept ``live brokers: [1, 3]`` for good, issue 13)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Mapping

from kazoo.exceptions import NoNodeError

from annal.cluster import PartitionState, TopicPlacement
from annal.zookeeper import paths

__all__ = ["read_children_data", "read_controller_id", "read_partition_states", "with_partition_states"]

Watch = Callable[[Any], None]

log = logging.getLogger(__name__)


def read_children_data(
    zk: Any, parent: str, timeout_s: float = 10.0, missing_parent_ok: bool = False, watch: Watch | None = None
) -> dict[str, bytes | None]:
    """``{child: data}`` of every child of ``parent``, the reads sent together (one round
    trip, not one per child). A child deleted between the listing and its read is left out;
    a missing ``parent`` gives ``{}`` with ``missing_parent_ok``, else raises NoNodeError.
    ``watch`` (one-shot) is set on the children list by the listing itself."""
    try:
        children = zk.get_children(parent, watch=watch)
    except NoNodeError:
        if missing_parent_ok:
            return {}
        raise
    pending = [(c, zk.get_async(f"{parent}/{c}")) for c in children]
    out: dict[str, bytes | None] = {}
    for child, result in pending:
        try:
            out[child] = result.get(timeout=timeout_s)[0]
        except NoNodeError:
            pass
    return out


def read_controller_id(zk: Any, watch: Watch | None = None) -> int:
    """The broker id in ``/controller`` (-1 when there is none); ``watch`` (one-shot) fires on
    the next change of the node, its creation included."""
    while True:
        try:
            data, _ = zk.get(paths.CONTROLLER, watch=watch)
            return paths.decode_controller(data)
        except NoNodeError:
            pass
        # No node: watch for its creation. If it was created between the two reads, read again.
        if zk.exists(paths.CONTROLLER, watch=watch) is None:
            return -1


def read_partition_states(
    zk: Any, placements: Mapping[str, TopicPlacement], watch: Callable[[Any], None] | None = None,
    timeout_s: float = 10.0,
) -> dict[tuple[str, int], PartitionState]:
    """The state znode of every partition of ``placements``, the reads sent together. A
    partition whose state znode is missing (being created) or unreadable is left out.
    ``watch`` (one callable, so kazoo keeps a single copy of it per znode) is set on each."""
    pending = []
    for name, placement in placements.items():
        for p in placement.partitions:
            path = paths.partition_state_path(name, p)
            pending.append(((name, p), zk.get_async(path, watch=watch) if watch else zk.get_async(path)))
    out: dict[tuple[str, int], PartitionState] = {}
    for key, result in pending:
        try:
            data, stat = result.get(timeout=timeout_s)
        except NoNodeError:
            if watch is not None:
                # Watch for its creation, so a topic whose states appear later is re-read.
                zk.exists_async(paths.partition_state_path(*key), watch=watch)
            continue
        try:
            out[key] = paths.decode_partition_state(data, stat.version)
        except ValueError as exc:
            log.warning("ignoring bad partition state of %s-%d: %s", key[0], key[1], exc)
    return out


def with_partition_states(
    placements: Mapping[str, TopicPlacement], states: Mapping[tuple[str, int], PartitionState]
) -> dict[str, TopicPlacement]:
    """``placements`` with each partition's current leader, ISR and leader epoch taken from
    ``states`` (partitions without a state keep their preferred leader)."""
    out: dict[str, TopicPlacement] = {}
    for name, placement in placements.items():
        leaders = dict(placement.partitions)
        isr = dict(placement.isr)
        epochs = dict(placement.leader_epochs)
        for p in placement.partitions:
            st = states.get((name, p))
            if st is not None:
                leaders[p] = st.leader
                isr[p] = st.isr
                epochs[p] = st.leader_epoch
        out[name] = dataclasses.replace(placement, partitions=leaders, isr=isr, leader_epochs=epochs)
    return out
