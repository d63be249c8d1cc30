"""Apache Kafka's RecordBatch v2 (magic 2): the bytes a producer sends, a segment stores and a
consumer receives. Pure functions over bytes: nothing in this package does I/O.

One module per job:

- ``_layout``: the 61-byte batch header (its byte layout is drawn there), codec ids, and the
  header-level operations the broker's storage runs on every batch: ``parse_header``,
  ``validate_batch``, ``set_base_offset``, ``batch_size_at``, ``iter_batch_positions``.
- ``_varint``: zig-zag varints and the lookup tables the hot paths use.
- ``_compression``: none and lz4 (others are refused, never stored unread).
- ``_builder``: ``BatchBuilder`` (the producer's open batch) and ``encode_batch``; a record's
  byte layout is drawn there.
- ``_decoder``: ``decode_batch``, ``iter_records``, ``decode_records_into`` (the consumer's
  fast path).
- ``_validate``: ``validate_records`` / ``check_records``, the walk over every record the
  broker runs before it appends a batch (as Kafka's LogValidator).
- ``_native`` (``_native.c``, optional): the same encoder, decoder and record walk compiled
  with the CPython C API, plus the producer's ``send()`` fast path; ``_impl`` picks it at
  import when it is built (``ANNAL_PURE_PYTHON=1`` forces the pure-Python modules above, which
  stay the reference: the tests run against both and compare them byte for byte).

The client SDK and the broker both build on this package; it imports neither. The encoder and
decoder are the SDK's hot path, so they trade some elegance for speed: varints of small values
come from tables, and the common shape (null key, no headers, values of one length) has bulk
paths that run no bytecode per record, tested equal to the general code on random and
adversarial input. Figures: docs/benchmarks/codec.md (``python -m annal.bench.codec``).
Every function is thread-safe; a ``BatchBuilder`` is not.
"""

from __future__ import annotations

from annal.record._builder import BatchBuilder, encode_batch
from annal.record._compression import MAX_DECOMPRESSED_BYTES, compression_from_name
from annal.record._decoder import decode_batch, decode_records_into, iter_records
from annal.record._layout import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_MASK,
    CODEC_NAMES,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    CRC_START,
    HEADER_SIZE,
    HEADER_STRUCT,
    LOG_OVERHEAD,
    MAGIC,
    MIN_BATCH_LENGTH,
    SUPPORTED_CODECS,
    TIMESTAMP_TYPE_MASK,
    BatchHeader,
    Record,
    batch_size_at,
    iter_batch_positions,
    parse_header,
    set_base_offset,
    validate_batch,
)
from annal.record._validate import check_records, validate_records
from annal.record._varint import decode_varint, encode_varint
from annal.record import _impl

# The producer's open batch: the compiled one when annal.record._native is built (and
# ANNAL_PURE_PYTHON is not set), else the pure-Python reference; both write the same bytes.
if _impl.native is not None:
    BatchBuilder = _impl.native.BatchBuilder  # type: ignore[misc]

NATIVE: bool = _impl.native is not None
"""True when the compiled codec (annal.record._native) runs, False for pure Python."""

__all__ = [
    "HEADER_SIZE",
    "HEADER_STRUCT",
    "LOG_OVERHEAD",
    "MAGIC",
    "CRC_START",
    "MIN_BATCH_LENGTH",
    "CODEC_NONE",
    "CODEC_GZIP",
    "CODEC_SNAPPY",
    "CODEC_LZ4",
    "CODEC_ZSTD",
    "CODEC_MASK",
    "CODEC_NAMES",
    "SUPPORTED_CODECS",
    "TIMESTAMP_TYPE_MASK",
    "MAX_DECOMPRESSED_BYTES",
    "BatchHeader",
    "parse_header",
    "validate_batch",
    "set_base_offset",
    "batch_size_at",
    "iter_batch_positions",
    "Record",
    "BatchBuilder",
    "encode_batch",
    "decode_batch",
    "iter_records",
    "decode_records_into",
    "validate_records",
    "check_records",
    "compression_from_name",
    "encode_varint",
    "decode_varint",
]
