"""Which implementation of the codec's hot paths runs: the compiled ``annal.record._native``
(annal/record/_native.c) when it imports, else the pure-Python modules of this package, which
are the reference and the fallback. ``ANNAL_PURE_PYTHON=1`` in the environment forces the
fallback (read once, at import). ``annal.native`` and ``annal --version`` say which one runs.

The native module is reached through ``native`` here at each call (once per batch, not per
record), so ``use_native`` can switch a whole process, which is how the tests run every codec
test against both. Thread-safe for reads; switch only while nothing else encodes or decodes.
"""

from __future__ import annotations

import os
from types import ModuleType

from crc32c import crc32c

from annal.record._compression import _check_codec, _compress

native: ModuleType | None = None
available: ModuleType | None = None  # the compiled module when it imports, even if not used

try:
    import annal.record._native as _compiled
except ImportError:  # not built: no compiler at install time, or a source checkout
    pass
else:
    _compiled.setup(crc32c, _compress, _check_codec)
    available = _compiled
    if os.environ.get("ANNAL_PURE_PYTHON", "") in ("", "0"):
        native = _compiled


def use_native(enabled: bool) -> None:
    """Run the compiled code (True) or the pure-Python code (False) from now on, in this
    process: ``annal.record.BatchBuilder`` and every function that dispatches on ``native``.
    Raises RuntimeError if the compiled module is not built."""
    global native
    if enabled and available is None:
        raise RuntimeError("annal.record._native is not built in this installation")
    native = available if enabled else None
    import annal.record as record
    from annal.record import _builder

    record.BatchBuilder = available.BatchBuilder if enabled else _builder.BatchBuilder  # type: ignore[union-attr,misc]
    record.NATIVE = enabled
