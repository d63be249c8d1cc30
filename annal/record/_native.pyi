"""Types of the compiled annal.record._native (annal/record/_native.c)."""

from typing import Any, Callable, Sequence

class BatchBuilder:
    def __init__(self, compression: int = ..., batch_size: int = ..., base_timestamp_ms: int | None = ...) -> None: ...
    def append(
        self,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None = ...,
    ) -> int: ...
    def append_value(self, timestamp_ms: int, value: bytes) -> int: ...
    def build(
        self,
        base_offset: int = ...,
        *,
        producer_id: int = ...,
        producer_epoch: int = ...,
        base_sequence: int = ...,
        partition_leader_epoch: int = ...,
    ) -> bytes: ...
    def build_parts(self, base_offset: int = ..., *, producer_id: int = ..., producer_epoch: int = ...,
                    base_sequence: int = ...) -> tuple[bytes, bytes]: ...
    @property
    def records_count(self) -> int: ...
    @property
    def size_in_bytes(self) -> int: ...
    @property
    def base_timestamp(self) -> int | None: ...
    @property
    def max_timestamp(self) -> int: ...
    @property
    def compression(self) -> int: ...
    @property
    def batch_size(self) -> int: ...

class Send:
    def __init__(self, producer: object, lock: Any, sticky: dict[str, Any], future_type: type, fallback: Callable[..., Any]) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def disable(self) -> None: ...

def decode_records(
    data: bytes,
    pos: int,
    end: int,
    count: int,
    base_offset: int,
    base_timestamp: int,
    out: list[Any],
    cls: type,
    prefix: tuple[Any, ...],
    check_only: bool,
) -> bool: ...
def send_value(lock: Any, sticky: dict[str, Any], topic: str, value: bytes, future_type: type) -> Any: ...
def setup(crc32c: Callable[..., int], compress: Callable[..., Any], check_codec: Callable[[int], None]) -> None: ...
