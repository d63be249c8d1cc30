"""The controller's partition leader election (Kafka 0.8's ``PartitionStateMachine`` with
``OfflinePartitionLeaderSelector`` and ``PreferredReplicaPartitionLeaderSelector``).

The broker that wins the kazoo ``Election`` (``zookeeper.py``) runs ``elect_leaders`` after
every change of the live brokers (and once a second). For every partition it reads the state
znode ``/brokers/topics/<t>/partitions/<p>/state`` and:

* the leader is dead (or -1): the new leader is the first replica, in assignment order, that
  is both live and in the ISR; the ISR becomes its live members. With no live ISR member the
  partition stays offline (leader -1) unless the topic sets
  ``unclean_leader_election_enable=1``: then any live replica leads, with an ISR of itself,
  and records only it had may be lost (Kafka's unclean election).
* the leader is live but ISR members are dead: they leave the ISR (so that acks=all does not
  wait for them until the leader's own lag check drops them).
* the preferred replica (the first) is live and in the ISR but another leads: leadership moves
  back to it (Kafka's auto.leader.rebalance, without its imbalance threshold).

Every leader change bumps ``leader_epoch``. Each write is ``set(path, data, version=v)`` with
the version the state was read at: if a leader changed the ISR meanwhile, the write fails with
BadVersion and the partition is looked at again on the next pass. The brokers learn the new
states from their watches on the state znodes (``LeaderAndIsr`` by watch, as in 0.8).

Thread-safety: called from the coordinator's controller thread only.
"""

from __future__ import annotations


import logging
from typing import Any, Mapping

from kazoo.exceptions import BadVersionError, NoNodeError, NodeExistsError

from annal.cluster import PartitionState, TopicPlacement
from annal.zookeeper import paths
from annal.zookeeper.reads import read_partition_states

__all__ = ["elect_leaders", "bump_controller_epoch", "choose_state", "initial_states"]

log = logging.getLogger("annal.controller")


def _flag(config: Mapping[str, Any], key: str) -> bool:
    try:
        return int(config.get(key, 0) or 0) != 0
    except (TypeError, ValueError):
        return False


def choose_state(
    state: PartitionState, replicas: tuple[int, ...], live: set[int], *, unclean: bool, preferred: bool,
    controller_epoch: int,
) -> PartitionState | None:
    """The state the controller writes for a partition in ``state`` given the ``live``
    brokers, or None when nothing is to change. Pure (unit-tested)."""
    live_isr = tuple(b for b in state.isr if b in live)
    if state.leader not in live:
        candidates = [r for r in replicas if r in live_isr]
        if candidates:
            leader = candidates[0]
            isr = live_isr
        elif unclean:
            others = [r for r in replicas if r in live]
            if not others:
                leader, isr = -1, state.isr
            else:
                leader, isr = others[0], (others[0],)
        else:
            # Kafka keeps the last ISR so that the partition comes back when one of them does.
            leader, isr = -1, state.isr
        if leader == state.leader and isr == state.isr:
            return None
        return PartitionState(leader, state.leader_epoch + 1, isr, controller_epoch)
    if live_isr != state.isr:
        return PartitionState(state.leader, state.leader_epoch, live_isr or (state.leader,), controller_epoch)
    if preferred and replicas and replicas[0] != state.leader and replicas[0] in live_isr:
        return PartitionState(replicas[0], state.leader_epoch + 1, state.isr, controller_epoch)
    return None


def elect_leaders(
    zk: Any, placements: Mapping[str, TopicPlacement], live: set[int], controller_epoch: int,
    *, preferred: bool = True, timeout_s: float = 10.0,
) -> int:
    """One pass over every partition (see the module docstring); returns the number of
    states written."""
    states = read_partition_states(zk, placements, timeout_s=timeout_s)
    written = 0
    for name, placement in placements.items():
        unclean = _flag(placement.config, "unclean_leader_election_enable")
        for p in placement.partitions:
            state = states.get((name, p))
            replicas = placement.replicas_of(p)
            if state is None:
                continue
            new = choose_state(state, replicas, live, unclean=unclean, preferred=preferred,
                               controller_epoch=controller_epoch)
            if new is None:
                continue
            try:
                zk.set(paths.partition_state_path(name, p), paths.encode_partition_state(new),
                       version=state.zk_version)
            except (BadVersionError, NoNodeError):
                log.info("controller: state of %s-%d changed meanwhile; looking again next pass", name, p)
                continue
            written += 1
            if new.leader != state.leader:
                log.info("controller: %s-%d leader %d -> %d (epoch %d), isr %s", name, p, state.leader,
                         new.leader, new.leader_epoch, list(new.isr))
            else:
                log.info("controller: %s-%d isr %s -> %s", name, p, list(state.isr), list(new.isr))
    return written


def bump_controller_epoch(zk: Any) -> int:
    """Increment ``/controller_epoch`` (conditionally) and return the new epoch."""
    while True:
        try:
            data, stat = zk.get(paths.CONTROLLER_EPOCH)
        except NoNodeError:
            try:
                zk.create(paths.CONTROLLER_EPOCH, b"1", makepath=True)
                return 1
            except NodeExistsError:
                continue
        epoch = (paths.decode_offset(data) or 0) + 1
        try:
            zk.set(paths.CONTROLLER_EPOCH, str(epoch).encode("ascii"), version=stat.version)
            return epoch
        except BadVersionError:
            continue


def initial_states(replicas: Mapping[int, tuple[int, ...]]) -> dict[int, PartitionState]:
    """The state of each partition of a new topic: its preferred replica leads, all in sync."""
    return {p: PartitionState(r[0], 0, tuple(r), 0) for p, r in replicas.items()}



