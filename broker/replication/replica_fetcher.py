"""``ReplicaFetcher``: one thread per (this follower, a leader) pair that copies the leader's
logs (Kafka's ``ReplicaFetcherThread``).

It speaks the data port protocol (``annal.protocol.framing``) over a blocking socket to the
leader's data port: a FETCH v1 carrying this broker's id as ``replica_id`` (so the leader
knows a follower is fetching, reads past its high watermark and records the fetch offset as
the follower's log end offset) and answered by the leader with ``sendfile`` like any fetch.
The batches are appended as they are, with the leader's offsets and leader epochs
(``PartitionLog.append_as_follower``).

A partition added to the fetcher first goes through truncation (KIP-101/KIP-279): it asks
the leader OFFSET_FOR_LEADER_EPOCH for the end offset of its own latest epoch and truncates
to where the two logs agree, then fetches from its log end offset.

Errors: a connection failure closes the socket and retries after a back-off (the leader may
be dead: the controller will name another, and the replica manager moves the partition to
that leader's fetcher); NOT_LEADER and unknown partition back the partition off until its
state changes; a batch that does not continue the log marks the partition for truncation.

Thread-safety: ``add``/``remove``/``close`` may be called from any thread; the rest runs on
the fetcher's own thread.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from annal.errors import (
    AnnalError,
    LocalUsageError,
    NotLeaderForPartitionError,
    OffsetOutOfRangeError,
    RemoteProtocolError,
    UnknownTopicOrPartitionError,
)
from annal.protocol import framing as fr

__all__ = ["ReplicaFetcher", "truncation_offset"]

log = logging.getLogger("annal.replica_fetcher")


def truncation_offset(
    my_latest_epoch: int, my_end_for: Callable[[int], int], my_leo: int,
    leader_epoch: int, leader_end_offset: int, my_high_watermark: int,
) -> int:
    """Where a follower truncates given the leader's answer (``leader_epoch``,
    ``leader_end_offset``) to its OffsetsForLeaderEpoch(``my_latest_epoch``) (KIP-279):

    * the leader knows no epoch that old (or the follower has none): the follower's high
      watermark, the only offset known to be committed;
    * the leader's epoch is the follower's: the smaller of the two end offsets;
    * the leader's largest epoch <= the follower's is older: the histories agree at most up to
      the end of that epoch on both sides.
    Pure."""
    if my_latest_epoch < 0 or leader_epoch < 0 or leader_end_offset < 0:
        return min(my_high_watermark, my_leo)
    if leader_epoch == my_latest_epoch:
        return min(leader_end_offset, my_leo)
    return min(leader_end_offset, my_end_for(leader_epoch), my_leo)


@dataclass(slots=True)
class _Fetching:
    topic: str
    partition: int
    plog: Any
    truncating: bool = True
    backoff_until: float = 0.0


class ReplicaFetcher:
    """Copies the partitions this broker follows from ``leader_id``."""

    def __init__(self, manager: Any, leader_id: int) -> None:
        self.manager = manager
        self.leader_id = leader_id
        self.me = manager.me_id
        cfg = manager.config
        self.max_wait_ms = cfg.replica_fetch_wait_max_ms
        self.max_bytes = cfg.replica_fetch_max_bytes
        self.timeout_s = max(5.0, cfg.request_timeout_ms / 1000.0)
        self._lock = threading.Lock()
        self._parts: dict[tuple[str, int], _Fetching] = {}
        self._wakeup = threading.Event()
        self._stopped = threading.Event()
        self._sock: socket.socket | None = None
        self._cid = 0
        self._thread = threading.Thread(target=self._run, name=f"annal-replica-fetcher-{leader_id}", daemon=True)
        self._thread.start()

    # -- control (any thread) ------------------------------------------------------------

    def add(self, topic: str, partition: int, plog: Any) -> None:
        with self._lock:
            self._parts[(topic, partition)] = _Fetching(topic, partition, plog)
        self._wakeup.set()

    def remove(self, topic: str, partition: int) -> None:
        with self._lock:
            self._parts.pop((topic, partition), None)

    def partitions(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._parts)

    def close(self) -> None:
        self._stopped.set()
        self._wakeup.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5.0)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.05
        while not self._stopped.is_set():
            with self._lock:
                parts = list(self._parts.values())
            now = time.monotonic()
            ready = [f for f in parts if f.backoff_until <= now]
            if not ready:
                self._wakeup.wait(0.1 if parts else 1.0)
                self._wakeup.clear()
                continue
            try:
                if self._sock is None:
                    self._connect()
                truncating = [f for f in ready if f.truncating]
                if truncating:
                    self._truncate(truncating)
                fetching = [f for f in ready if not f.truncating]
                if fetching:
                    self._fetch(fetching)
                backoff = 0.05
            except (OSError, AnnalError) as exc:
                if self._stopped.is_set():
                    break
                log.info("replica fetcher %d<-%d: %s; retrying in %.2f s", self.me, self.leader_id, exc, backoff)
                self._disconnect()
                self._stopped.wait(backoff)
                backoff = min(1.0, backoff * 2)
            except Exception:
                log.exception("replica fetcher %d<-%d failed; retrying", self.me, self.leader_id)
                self._disconnect()
                self._stopped.wait(0.5)
        self._disconnect()

    def _connect(self) -> None:
        info = self.manager.broker_info(self.leader_id)
        if info is None:
            raise OSError(f"leader {self.leader_id} is not registered")
        sock = socket.create_connection((info.host, info.fetch_port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.timeout_s + self.max_wait_ms / 1000.0)
        self._sock = sock

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _roundtrip(self, request: bytes) -> memoryview:
        sock = self._sock
        assert sock is not None
        sock.sendall(request)
        reader = fr.FrameReader(min_frame_bytes=fr.RESPONSE_HEADER_SIZE, error_cls=RemoteProtocolError)
        while True:
            frame = reader.next_frame()
            if frame is not None:
                return frame
            data = sock.recv(1 << 20)
            if not data:
                raise OSError("leader closed the connection")
            reader.receive_data(data)

    def _next_cid(self) -> int:
        self._cid = (self._cid + 1) & 0x7FFFFFFF
        return self._cid

    def _truncate(self, parts: list[_Fetching]) -> None:
        req = fr.EpochRequest(self._next_cid(), [
            fr.EpochPartition(f.topic, f.partition, f.plog.leader_epochs.latest_epoch) for f in parts
        ])
        resp = fr.decode_epoch_response(self._roundtrip(fr.encode_epoch_request(req)))
        if resp.error_code:
            raise AnnalError(f"OffsetsForLeaderEpoch answered error {resp.error_code}")
        by_key = {(f.topic, f.partition): f for f in parts}
        for r in resp.partitions:
            f = by_key.get((r.topic, r.partition))
            if f is None:
                continue
            if r.error_code:
                f.backoff_until = time.monotonic() + 0.1
                continue
            plog = f.plog
            cache = plog.leader_epochs
            leo = plog.log_end_offset
            to = truncation_offset(
                cache.latest_epoch, lambda e: cache.end_offset_for(e, leo)[1], leo,
                r.leader_epoch, r.end_offset, self.manager.follower_high_watermark(f.topic, f.partition),
            )
            if to < leo:
                log.warning("%s-%d: truncating follower log from %d to %d (leader %d epoch %d ends at %d)",
                            f.topic, f.partition, leo, to, self.leader_id, r.leader_epoch, r.end_offset)
                plog.truncate_to(to)
                self.manager.on_truncated(f.topic, f.partition)
            f.truncating = False

    def _fetch(self, parts: list[_Fetching]) -> None:
        req = fr.FetchRequest(
            self._next_cid(), self.max_wait_ms, 1,
            [fr.FetchPartition(f.topic, f.partition, f.plog.log_end_offset, self.max_bytes) for f in parts],
            replica_id=self.me,
        )
        resp = fr.decode_fetch_response(self._roundtrip(fr.encode_fetch_request(req)))
        if resp.error_code:
            raise AnnalError(f"fetch answered error {resp.error_code}")
        by_key = {(f.topic, f.partition): f for f in parts}
        for r in resp.partitions:
            f = by_key.get((r.topic, r.partition))
            if f is None:
                continue
            with self._lock:
                if self._parts.get((f.topic, f.partition)) is not f:
                    continue  # moved to another leader meanwhile
            if r.error_code == 0:
                if len(r.records):
                    try:
                        f.plog.append_as_follower(r.records)
                    except (LocalUsageError, UnknownTopicOrPartitionError):
                        # The log was closed or deleted (shutting down, topic deleted).
                        self.remove(f.topic, f.partition)
                        continue
                    except AnnalError as exc:
                        log.warning("%s-%d: fetched batches do not continue the log (%s); truncating again",
                                    f.topic, f.partition, exc.message)
                        f.truncating = True
                        continue
                self.manager.on_follower_fetched(f.topic, f.partition, r.high_watermark)
            elif r.error_code == OffsetOutOfRangeError.code:
                leader_leo = r.high_watermark
                if 0 <= leader_leo < f.plog.log_end_offset:
                    f.truncating = True
                elif r.log_start_offset > f.plog.log_end_offset:
                    log.warning("%s-%d: log end %d is below the leader's log start %d; starting again there",
                                f.topic, f.partition, f.plog.log_end_offset, r.log_start_offset)
                    f.plog.truncate_fully_and_start_at(r.log_start_offset)
                else:
                    f.backoff_until = time.monotonic() + 1.0
            elif r.error_code in (NotLeaderForPartitionError.code, UnknownTopicOrPartitionError.code):
                f.backoff_until = time.monotonic() + 0.1
            else:
                log.info("%s-%d: fetch from leader %d: error %d %s", f.topic, f.partition, self.leader_id,
                         r.error_code, r.error_message)
                f.backoff_until = time.monotonic() + 0.2
