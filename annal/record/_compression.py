"""The codecs a batch's records area may be compressed with. Annal reads and writes none and
lz4 (independent-block lz4 frames, as Kafka's and kafka-python's writers produce); gzip, snappy
and zstd batches are refused with UnsupportedCompressionTypeError rather than stored unread.
Pure; thread-safe.
"""

from __future__ import annotations

from lz4.frame import LZ4FrameDecompressor as _LZ4FrameDecompressor
from lz4.frame import compress as _lz4_compress
from lz4.frame import decompress as _lz4_decompress

from annal.errors import CorruptRecordError, UnsupportedCompressionTypeError
from annal.record._layout import CODEC_LZ4, CODEC_NAMES, CODEC_NONE, SUPPORTED_CODECS, Buffer

def compression_from_name(name: str | None) -> int:
    """Codec id for a ``compression_type`` setting: None/"none" -> CODEC_NONE, "lz4" -> CODEC_LZ4.

    Any other name (gzip, snappy, zstd or unknown) raises UnsupportedCompressionTypeError."""
    if name is None:
        return CODEC_NONE
    lowered = name.lower() if isinstance(name, str) else name
    if lowered == "none":
        return CODEC_NONE
    if lowered == "lz4":
        return CODEC_LZ4
    raise UnsupportedCompressionTypeError(
        f"compression_type {name!r} is not supported; use 'none' or 'lz4'", codec=name
    )


def _check_codec(compression: int) -> None:
    if compression not in SUPPORTED_CODECS:
        raise UnsupportedCompressionTypeError(
            f"compression codec {CODEC_NAMES.get(compression, compression)} is not supported "
            "(none, lz4 are)",
            codec=compression,
        )


def _compress(records: bytes | bytearray, compression: int) -> bytes | bytearray:
    if compression == CODEC_LZ4:
        # Independent blocks, as Kafka's KafkaLZ4BlockOutputStream and kafka-python write them.
        return _lz4_compress(records, block_linked=False)
    return records


# A batch is at most max_message_bytes on the wire (1 MiB by default) but lz4 can expand a
# crafted frame ~255x; refuse to inflate one past this rather than let a producer exhaust the
# broker's memory through validate_records.
MAX_DECOMPRESSED_BYTES = 1 << 27  # 128 MiB


def _decompress(data: Buffer, codec: int, position: int) -> bytes:
    """The records area of a compressed batch. Raises CorruptRecordError on a malformed,
    truncated or oversized frame, UnsupportedCompressionTypeError on a codec other than lz4."""
    if codec != CODEC_LZ4:
        raise UnsupportedCompressionTypeError(
            f"compression codec {CODEC_NAMES.get(codec, codec)} is not supported (none, lz4 are)",
            codec=codec,
        )
    try:
        if len(data) >= 14 and data[4] & 0x08:
            # The frame declares its content size (Kafka's and python-lz4's writers do):
            # check it before inflating; LZ4F itself then verifies the frame matches it.
            declared = int.from_bytes(data[6:14], "little")
            if declared > MAX_DECOMPRESSED_BYTES:
                raise CorruptRecordError(
                    f"lz4 frame declares {declared} bytes, over the {MAX_DECOMPRESSED_BYTES}-byte limit",
                    position=position,
                )
            return _lz4_decompress(data)
        # No declared size: inflate through a bounded decompressor (slower, so not the default).
        decompressor = _LZ4FrameDecompressor()
        out = decompressor.decompress(data, max_length=MAX_DECOMPRESSED_BYTES)
        if not decompressor.eof:
            raise CorruptRecordError(
                "lz4 frame is truncated or inflates past the "
                f"{MAX_DECOMPRESSED_BYTES}-byte limit",
                position=position,
            )
        return out
    except RuntimeError as exc:  # python-lz4 reports every malformed frame as RuntimeError
        raise CorruptRecordError(f"lz4 frame cannot be decompressed: {exc}", position=position) from None


