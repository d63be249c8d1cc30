"""What a leader knows about one partition it leads: the followers' log end offsets, when
each last caught up, the ISR and the high watermark (Kafka's ``Partition`` /
``Replica`` bookkeeping on the leader).

Pure bookkeeping, no I/O: the replica manager feeds it follower fetches and asks it which
followers should leave or join the ISR; it writes those changes to ZooKeeper and only then
calls ``set_isr`` (a leader never acts on an ISR that ZooKeeper has not accepted).

High watermark: the smallest log end offset over the ISR (the leader's own included). It never
goes down while the same leader leads (an ISR member joins only once it has reached it).

Thread-safety: thread-safe (one lock); follower fetches come from the data port's event loop,
ISR changes from the replica manager's thread, produce checks from request threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

__all__ = ["LeaderState", "FollowerProgress"]


@dataclass(slots=True)
class FollowerProgress:
    """A follower as the leader sees it through its fetches."""

    log_end_offset: int
    last_caught_up_ms: float
    last_fetch_ms: float = 0.0
    leader_leo_at_last_fetch: int = 0


@dataclass(slots=True)
class LeaderState:
    """One partition led here, at ``leader_epoch``. ``me`` is this broker's id."""

    me: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    high_watermark: int
    epoch_start_offset: int
    now_ms: float
    followers: dict[int, FollowerProgress] = field(default_factory=dict)
    fenced: bool = False  # ZooKeeper says another broker (or a newer epoch) leads now
    pending_isr_change: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # Kafka starts every ISR follower as caught up "now" with the high watermark (it had
        # at least that much to be in sync): a new leader gives each a full
        # replica_lag_time_max_ms to show up. A replica outside the ISR is unknown until it
        # fetches: it must not look caught up (it would join the ISR without the records).
        for b in self.replicas:
            if b != self.me:
                if b in self.isr:
                    self.followers[b] = FollowerProgress(self.high_watermark, self.now_ms)
                else:
                    self.followers[b] = FollowerProgress(-1, 0.0)

    def update_follower(self, broker_id: int, fetch_offset: int, leader_leo: int, now_ms: float) -> bool:
        """A fetch from follower ``broker_id`` at ``fetch_offset`` (its log end offset) while
        the leader's log ends at ``leader_leo``. Returns True when the high watermark moved."""
        with self._lock:
            f = self.followers.get(broker_id)
            if f is None:
                if broker_id not in self.replicas:
                    return False
                f = self.followers[broker_id] = FollowerProgress(fetch_offset, 0.0)
            f.log_end_offset = fetch_offset
            if fetch_offset >= leader_leo:
                f.last_caught_up_ms = now_ms
            elif fetch_offset >= f.leader_leo_at_last_fetch and f.last_fetch_ms:
                f.last_caught_up_ms = max(f.last_caught_up_ms, f.last_fetch_ms)
            f.last_fetch_ms = now_ms
            f.leader_leo_at_last_fetch = leader_leo
            return self._advance_locked(leader_leo)

    def _advance_locked(self, leader_leo: int) -> bool:
        hw = leader_leo
        for b in self.isr:
            if b == self.me:
                continue
            f = self.followers.get(b)
            hw = min(hw, f.log_end_offset if f is not None else self.high_watermark)
        if hw > self.high_watermark:
            self.high_watermark = hw
            return True
        return False

    def maybe_advance(self, leader_leo: int) -> bool:
        with self._lock:
            return self._advance_locked(leader_leo)

    def current_high_watermark(self, leader_leo: int) -> int:
        """The high watermark, advanced first (a leader alone in its ISR has HW = LEO)."""
        with self._lock:
            self._advance_locked(leader_leo)
            return self.high_watermark

    def lagging(self, now_ms: float, lag_max_ms: float) -> tuple[int, ...]:
        """ISR followers that have not caught up within ``lag_max_ms`` (to remove)."""
        with self._lock:
            return tuple(
                b for b in self.isr
                if b != self.me and now_ms - self.followers.get(b, FollowerProgress(0, 0.0)).last_caught_up_ms > lag_max_ms
            )

    def caught_up(self) -> tuple[int, ...]:
        """Replicas outside the ISR whose log reached the high watermark and this epoch's
        start (Kafka's ``isFollowerInSync`` for expansion): to add."""
        with self._lock:
            return tuple(
                b for b, f in self.followers.items()
                if b not in self.isr and b in self.replicas and f.last_fetch_ms > 0
                and f.log_end_offset >= self.high_watermark and f.log_end_offset >= self.epoch_start_offset
            )

    def set_isr(self, isr: tuple[int, ...], leader_leo: int) -> None:
        with self._lock:
            self.isr = tuple(isr)
            self._advance_locked(leader_leo)

    def follower_lag(self, leader_leo: int) -> dict[int, int]:
        with self._lock:
            return {b: max(0, leader_leo - f.log_end_offset) for b, f in self.followers.items()}
