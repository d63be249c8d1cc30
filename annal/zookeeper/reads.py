"""Reading a ZooKeeper folder's children with their data, shared by the broker's
coordinator and the client's ZooKeeper metadata and group code."""

from __future__ import annotations

from typing import Any

from kazoo.exceptions import NoNodeError

__all__ = ["read_children_data"]


def read_children_data(
    zk: Any, parent: str, timeout_s: float = 10.0, missing_parent_ok: bool = False
) -> dict[str, bytes | None]:
    """``{child: data}`` of every child of ``parent``, the reads sent together (one round
    trip, not one per child). A child deleted between the listing and its read is left out;
    a missing ``parent`` gives ``{}`` with ``missing_parent_ok``, else raises NoNodeError."""
    try:
        children = zk.get_children(parent)
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
