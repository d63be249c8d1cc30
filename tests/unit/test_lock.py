"""Unit tests of annal.broker.server.lock: one holder per data dir, released on close or death."""

from __future__ import annotations

import subprocess
import sys

import pytest

from annal.broker.server.lock import DataDirLock, DataDirLockedError


def test_second_holder_is_refused_with_the_pid(tmp_path):
    with DataDirLock(tmp_path) as first:
        assert first.held
        with pytest.raises(DataDirLockedError) as ei:
            DataDirLock(tmp_path).acquire()
        assert str(__import__("os").getpid()) in ei.value.message
    again = DataDirLock(tmp_path)
    again.acquire()
    again.release()
    again.release()  # idempotent


def test_lock_of_a_dead_process_is_free(tmp_path):
    code = f"from annal.broker.server.lock import DataDirLock; DataDirLock({str(tmp_path)!r}).acquire(); import os; os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with DataDirLock(tmp_path):
        pass
