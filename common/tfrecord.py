"""TFRecord files and `tf.train.Example` messages, read and written without TensorFlow.

A TFRecord file is a sequence of records. Each record is framed as

    uint64 length (little-endian) | uint32 masked CRC32C of the length bytes
    | data (length bytes) | uint32 masked CRC32C of the data

and a file may be gzip-compressed as a whole. Every reader here checks both
CRCs of every record it returns, and raises `DataError` with the file name and
the record's byte offset when a record is corrupt or the file is truncated.

`decode_example` and `encode_example` handle the protobuf wire format of
`tf.train.Example` by hand, for the three feature kinds:

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                            Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import uuid
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, Union

import google_crc32c
import numpy as np

from condgen.errors import DataError, OutputExistsError

logger = logging.getLogger(__name__)

__all__ = [
    "masked_crc32c",
    "is_gzip_file",
    "iter_records",
    "index_records",
    "read_record_at",
    "read_record_header",
    "read_record_data",
    "decode_example",
    "encode_example",
    "write_tfrecord",
    "FeatureValue",
]

# A decoded feature: float32 or int64 array, or a list of byte strings.
FeatureValue = Union[np.ndarray, list]

HEADER_BYTES = 12  # uint64 length + uint32 length CRC
FOOTER_BYTES = 4  # uint32 data CRC
GZIP_MAGIC = b"\x1f\x8b"

_CRC_MASK_DELTA = 0xA282EAD8
_UINT32 = 0xFFFFFFFF
_UINT64 = 0xFFFFFFFFFFFFFFFF
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

# Protobuf wire types.
_VARINT = 0
_FIXED64 = 1
_LENGTH_DELIMITED = 2
_FIXED32 = 5

# Field numbers of Feature.kind.
_BYTES_LIST = 1
_FLOAT_LIST = 2
_INT64_LIST = 3


# ---------------------------------------------------------------------------
# Record framing
# ---------------------------------------------------------------------------


def masked_crc32c(data: bytes) -> int:
    """Return the CRC32C of `data` masked as TFRecord stores it (a uint32)."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & _UINT32


def _frame_record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return b"".join(
        (
            length,
            struct.pack("<I", masked_crc32c(length)),
            data,
            struct.pack("<I", masked_crc32c(data)),
        )
    )


def is_gzip_file(path: str | os.PathLike) -> bool:
    """Return whether the file starts with the gzip magic bytes 1f 8b."""
    with _open_binary(Path(path)) as file:
        return file.read(2) == GZIP_MAGIC


def _open_binary(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: TFRecord file not found; check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a TFRecord file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot open the TFRecord file: {error.strerror or error}") from None


def _where(name: str, offset: int, compressed: bool) -> str:
    if compressed:
        return f"{name}: record at byte {offset} of the decompressed stream"
    return f"{name}: record at byte {offset}"


def _read_exactly(file: BinaryIO, n_bytes: int, name: str, compressed: bool) -> bytes:
    try:
        return file.read(n_bytes)
    except (OSError, EOFError, zlib.error) as error:
        # gzip raises BadGzipFile (an OSError), EOFError for a cut-off stream,
        # and zlib.error for damaged compressed data.
        raise DataError(
            f"{name}: cannot decompress the gzip TFRecord file ({error}); "
            "the file is damaged or truncated, so copy or write it again"
        ) from None


def read_record_header(file: BinaryIO, name: str, offset: int, compressed: bool = False) -> int | None:
    """Read and check the 12-byte header at the current position and return the data length.

    Returns None at a clean end of file, where no byte is left. `name` and
    `offset` (the header's position) appear in error messages, and
    `compressed` means that `offset` counts bytes of the decompressed stream.
    Raises `DataError` for a header that is cut short or whose length CRC does
    not match.
    """
    header = _read_exactly(file, HEADER_BYTES, name, compressed)
    if not header:
        return None

    where = _where(name, offset, compressed)
    if len(header) < HEADER_BYTES:
        raise DataError(
            f"{where}: truncated TFRecord file: the record header has {len(header)} of "
            f"{HEADER_BYTES} bytes. The file was cut short; copy or write it again"
        )
    length_bytes = header[:8]
    (stored_length_crc,) = struct.unpack("<I", header[8:])
    computed_length_crc = masked_crc32c(length_bytes)
    if stored_length_crc != computed_length_crc:
        raise DataError(
            f"{where}: corrupt TFRecord file: the CRC of the length field does not match "
            f"(stored 0x{stored_length_crc:08x}, computed 0x{computed_length_crc:08x}). "
            "The file is damaged or the offset is not the start of a record"
        )
    (length,) = struct.unpack("<Q", length_bytes)
    return length


def read_record_data(file: BinaryIO, name: str, offset: int, length: int, compressed: bool = False) -> bytes:
    """Read the `length` data bytes and the data CRC that follow a header, and return the checked data.

    `offset` is the position of the record's header, for error messages.
    Raises `DataError` when fewer bytes remain or the data CRC does not match.
    """
    where = _where(name, offset, compressed)
    # Two reads, so that the data is not copied once more out of a larger buffer.
    data = _read_exactly(file, length, name, compressed)
    footer = _read_exactly(file, FOOTER_BYTES, name, compressed) if len(data) == length else b""
    if len(footer) < FOOTER_BYTES:
        raise DataError(
            f"{where}: truncated TFRecord file: the record declares {length} data bytes plus a "
            f"{FOOTER_BYTES}-byte CRC, but only {len(data) + len(footer)} bytes remain. "
            "The file was cut short; copy or write it again"
        )

    (stored_data_crc,) = struct.unpack("<I", footer)
    computed_data_crc = masked_crc32c(data)
    if stored_data_crc != computed_data_crc:
        raise DataError(
            f"{where}: corrupt TFRecord file: the CRC of the record data does not match "
            f"(stored 0x{stored_data_crc:08x}, computed 0x{computed_data_crc:08x}). "
            "The file is damaged; copy or write it again"
        )
    return data


def _read_next_record(file: BinaryIO, name: str, offset: int, compressed: bool) -> bytes | None:
    """Read the record at the current position, or return None at a clean end of file."""
    length = read_record_header(file, name, offset, compressed)
    if length is None:
        return None
    return read_record_data(file, name, offset, length, compressed)


def iter_records(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """Yield `(offset, data)` for every record of a TFRecord file, in file order.

    `offset` is the byte position of the record's header, in the decompressed
    stream for a gzip file. Both CRCs of every record are checked. An empty
    file yields nothing. Raises `DataError` for a missing, corrupt or
    truncated file.
    """
    path = Path(path)
    compressed = is_gzip_file(path)
    raw = _open_binary(path)
    file: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
    try:
        offset = 0
        while True:
            data = _read_next_record(file, str(path), offset, compressed)
            if data is None:
                return
            yield offset, data
            offset += HEADER_BYTES + len(data) + FOOTER_BYTES
    finally:
        file.close()
        raw.close()


def index_records(path: str | os.PathLike) -> list[tuple[int, int]]:
    """Return `(offset, length)` of every record in an uncompressed TFRecord file.

    Only the record headers are read, so this checks the length CRCs and that
    each record fits in the file, but not the data CRCs: `read_record_at`
    checks those when a record is read. Raises `DataError` for a gzip file,
    which has no random access, and for a corrupt or truncated header.
    """
    path = Path(path)
    if is_gzip_file(path):
        raise DataError(
            f"{path}: is gzip-compressed, and an index needs random access; "
            f"decompress it first (gunzip -c {path.name} > plain.tfrecord) or read it with iter_records"
        )
    file_size = path.stat().st_size
    index: list[tuple[int, int]] = []
    with _open_binary(path) as file:
        offset = 0
        while offset < file_size:
            where = _where(str(path), offset, compressed=False)
            header = file.read(HEADER_BYTES)
            if len(header) < HEADER_BYTES:
                raise DataError(
                    f"{where}: truncated TFRecord file: the record header has {len(header)} of "
                    f"{HEADER_BYTES} bytes. The file was cut short; copy or write it again"
                )
            length_bytes = header[:8]
            (stored_length_crc,) = struct.unpack("<I", header[8:])
            if stored_length_crc != masked_crc32c(length_bytes):
                raise DataError(
                    f"{where}: corrupt TFRecord file: the CRC of the length field does not match. "
                    "The file is damaged; copy or write it again"
                )
            (length,) = struct.unpack("<Q", length_bytes)
            end = offset + HEADER_BYTES + length + FOOTER_BYTES
            if end > file_size:
                raise DataError(
                    f"{where}: truncated TFRecord file: the record declares {length} data bytes plus a "
                    f"{FOOTER_BYTES}-byte CRC, but only {file_size - offset - HEADER_BYTES} bytes remain. "
                    "The file was cut short; copy or write it again"
                )
            index.append((offset, length))
            offset = end
            file.seek(offset)
    return index


def read_record_at(source: str | os.PathLike | BinaryIO, offset: int) -> bytes:
    """Read and check the record whose header starts at byte `offset`.

    `source` is the path of an uncompressed TFRecord file or a binary file
    object opened on one. A file object is left open at the end of the record.
    Raises `DataError` for a corrupt or truncated record, including an offset
    that is not the start of a record.
    """
    if isinstance(source, (str, os.PathLike)):
        with _open_binary(Path(source)) as file:
            return read_record_at(file, offset)
    name = str(getattr(source, "name", repr(source)))
    source.seek(offset)
    data = _read_next_record(source, name, offset, compressed=False)
    if data is None:
        raise DataError(
            f"{name}: no record at byte {offset}, which is at or past the end of the file; "
            "rebuild the index of this file"
        )
    return data


# ---------------------------------------------------------------------------
# tf.train.Example decoding
# ---------------------------------------------------------------------------


class _MalformedMessage(Exception):
    """Raised inside the decoder; `decode_example` turns it into a DataError with context."""


def _read_varint(buffer: memoryview, position: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if position >= end:
            raise _MalformedMessage("a varint runs past the end of its field")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _UINT64, position
        shift += 7
        if shift >= 70:
            raise _MalformedMessage("a varint is longer than 10 bytes")


def _iter_fields(buffer: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield `(field_number, wire_type, value_start, value_end)` for a message's fields.

    For a varint field the decoded value is passed as `value_start` and
    `value_end` is -1. For the other wire types the range covers the payload.
    """
    position = start
    while position < end:
        key, position = _read_varint(buffer, position, end)
        field_number = key >> 3
        wire_type = key & 0x7
        if wire_type == _VARINT:
            value, position = _read_varint(buffer, position, end)
            yield field_number, wire_type, value, -1
            continue
        if wire_type == _LENGTH_DELIMITED:
            length, position = _read_varint(buffer, position, end)
            value_end = position + length
        elif wire_type == _FIXED64:
            value_end = position + 8
        elif wire_type == _FIXED32:
            value_end = position + 4
        else:
            raise _MalformedMessage(f"field {field_number} has unsupported wire type {wire_type}")
        if value_end > end:
            raise _MalformedMessage(f"field {field_number} runs past the end of its message")
        yield field_number, wire_type, position, value_end
        position = value_end


def _to_int64(value: int) -> int:
    return value - (1 << 64) if value > _INT64_MAX else value


def _decode_bytes_list(buffer: memoryview, ranges: list[tuple[int, int]]) -> list[bytes]:
    values: list[bytes] = []
    for start, end in ranges:
        for field_number, wire_type, value_start, value_end in _iter_fields(buffer, start, end):
            if field_number == 1 and wire_type == _LENGTH_DELIMITED:
                values.append(bytes(buffer[value_start:value_end]))
    return values


def _decode_float_list(buffer: memoryview, ranges: list[tuple[int, int]]) -> np.ndarray:
    chunks: list[np.ndarray] = []
    for start, end in ranges:
        for field_number, wire_type, value_start, value_end in _iter_fields(buffer, start, end):
            if field_number != 1:
                continue
            if wire_type not in (_LENGTH_DELIMITED, _FIXED32):
                raise _MalformedMessage(f"a float_list value has wire type {wire_type}")
            n_bytes = value_end - value_start
            if n_bytes % 4:
                raise _MalformedMessage(f"a packed float_list has {n_bytes} bytes, not a multiple of 4")
            # One vectorised copy of the packed little-endian float32 payload.
            chunk = np.frombuffer(buffer, dtype="<f4", count=n_bytes // 4, offset=value_start).copy()
            chunks.append(chunk)
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    values = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return values.astype(np.float32, copy=False)


def _decode_int64_list(buffer: memoryview, ranges: list[tuple[int, int]]) -> np.ndarray:
    values: list[int] = []
    for start, end in ranges:
        for field_number, wire_type, value_start, value_end in _iter_fields(buffer, start, end):
            if field_number != 1:
                continue
            if wire_type == _VARINT:
                values.append(_to_int64(value_start))
            elif wire_type == _LENGTH_DELIMITED:
                position = value_start
                while position < value_end:
                    value, position = _read_varint(buffer, position, value_end)
                    values.append(_to_int64(value))
            else:
                raise _MalformedMessage(f"an int64_list value has wire type {wire_type}")
    return np.array(values, dtype=np.int64)


def _decode_feature(buffer: memoryview, start: int, end: int) -> FeatureValue:
    # Feature.kind is a oneof: a later kind replaces an earlier one, and repeated
    # occurrences of the same kind merge, as protobuf parsers do.
    kind = None
    ranges: list[tuple[int, int]] = []
    for field_number, wire_type, value_start, value_end in _iter_fields(buffer, start, end):
        if wire_type != _LENGTH_DELIMITED or field_number not in (_BYTES_LIST, _FLOAT_LIST, _INT64_LIST):
            continue
        if field_number != kind:
            kind = field_number
            ranges = []
        ranges.append((value_start, value_end))
    if kind == _FLOAT_LIST:
        return _decode_float_list(buffer, ranges)
    if kind == _INT64_LIST:
        return _decode_int64_list(buffer, ranges)
    # A bytes_list, or a Feature with no kind set, which is returned as an empty list.
    return _decode_bytes_list(buffer, ranges)


def _decode_map_entry(
    buffer: memoryview, start: int, end: int, skip: Collection[str] = ()
) -> tuple[str, FeatureValue | None]:
    """Return a map entry's feature name and value; the value is None for a name in `skip`."""
    key = ""
    value_range = (start, start)  # an absent value is an empty Feature
    for field_number, wire_type, value_start, value_end in _iter_fields(buffer, start, end):
        if wire_type != _LENGTH_DELIMITED:
            continue
        if field_number == 1:
            try:
                key = str(buffer[value_start:value_end], "utf-8")
            except UnicodeDecodeError:
                raise _MalformedMessage("a feature name is not valid UTF-8") from None
        elif field_number == 2:
            value_range = (value_start, value_end)
    if key in skip:
        return key, None
    return key, _decode_feature(buffer, *value_range)


def decode_example(data: bytes, source: str | None = None, *, skip: Collection[str] = ()) -> dict[str, FeatureValue]:
    """Decode a serialized `tf.train.Example` into `{name: value}`.

    float_list becomes a float32 array, int64_list an int64 array, and
    bytes_list a `list[bytes]`. A feature with no kind set decodes as an empty
    list. Features named in `skip` are left out of the result without decoding
    or copying their values, which makes reading only the labels of a record
    with a large `audio` or `img` feature cheap. `source` (for example
    "file.tfrecord: record at byte 1234") is put in front of the `DataError`
    raised for a malformed message.
    """
    buffer = memoryview(data).cast("B")
    features: dict[str, FeatureValue] = {}
    try:
        for field_number, wire_type, start, end in _iter_fields(buffer, 0, len(buffer)):
            if field_number != 1 or wire_type != _LENGTH_DELIMITED:
                continue
            for entry_field, entry_wire_type, entry_start, entry_end in _iter_fields(buffer, start, end):
                if entry_field == 1 and entry_wire_type == _LENGTH_DELIMITED:
                    name, value = _decode_map_entry(buffer, entry_start, entry_end, skip)
                    if value is not None:
                        features[name] = value
    except _MalformedMessage as error:
        prefix = f"{source}: " if source else ""
        raise DataError(f"{prefix}invalid tf.train.Example message: {error}") from None
    return features


# ---------------------------------------------------------------------------
# tf.train.Example encoding
# ---------------------------------------------------------------------------


def _encode_varint(value: int) -> bytes:
    value &= _UINT64  # negative int64 values become 10-byte two's complement varints
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_length_delimited(field_number: int, payload: bytes) -> bytes:
    return _encode_varint((field_number << 3) | _LENGTH_DELIMITED) + _encode_varint(len(payload)) + payload


def _encode_packed(field_number: int, payload: bytes) -> bytes:
    # An empty repeated field is left out, as protobuf serializers do.
    return _encode_length_delimited(field_number, payload) if payload else b""


def _feature_kind(name: str, value: object) -> tuple[int, list | np.ndarray]:
    """Return the Feature kind for a Python or numpy value and its values as a flat sequence."""
    if isinstance(value, np.ndarray):
        flat = value.reshape(-1)
        if flat.dtype.kind == "f":
            return _FLOAT_LIST, flat
        if flat.dtype.kind in "iub":
            return _INT64_LIST, flat
        if flat.dtype.kind in "SU":
            return _BYTES_LIST, list(flat)
        value = list(flat)
    if isinstance(value, (bytes, bytearray, str)):
        return _BYTES_LIST, [value]
    if isinstance(value, (bool, int, np.integer)):
        return _INT64_LIST, [value]
    if isinstance(value, (float, np.floating)):
        return _FLOAT_LIST, [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"feature {name!r}: cannot encode a value of type {type(value).__name__}")
    if all(isinstance(item, (bytes, bytearray, str, np.bytes_, np.str_)) for item in value):
        return _BYTES_LIST, list(value)  # an empty list is an empty bytes_list
    if all(isinstance(item, (bool, int, np.integer)) for item in value):
        return _INT64_LIST, list(value)
    if all(isinstance(item, (bool, int, float, np.integer, np.floating)) for item in value):
        return _FLOAT_LIST, list(value)
    raise TypeError(f"feature {name!r}: a list must contain only byte strings/str, only integers, or only numbers")


def _encode_feature(name: str, value: object) -> bytes:
    kind, values = _feature_kind(name, value)
    if kind == _FLOAT_LIST:
        payload = np.asarray(values, dtype="<f4").tobytes()
        body = _encode_packed(1, payload)
    elif kind == _INT64_LIST:
        integers = [int(item) for item in values]
        for integer in integers:
            if not _INT64_MIN <= integer <= _INT64_MAX:
                raise ValueError(f"feature {name!r}: {integer} does not fit in int64")
        body = _encode_packed(1, b"".join(_encode_varint(integer) for integer in integers))
    else:
        items = [item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in values]
        body = b"".join(_encode_length_delimited(1, item) for item in items)
    return _encode_length_delimited(kind, body)


def encode_example(features: Mapping[str, object]) -> bytes:
    """Serialize `{name: value}` as a `tf.train.Example`.

    A floating array or Python float becomes a float_list (stored as float32).
    An integer or bool array, an int, or a list of ints becomes an int64_list.
    `bytes`, `str` (stored as UTF-8) or a list of them becomes a bytes_list, and
    so does an empty list. Multi-dimensional arrays are flattened in C order.
    Floats and int64s are packed, as TensorFlow writes them. Raises TypeError
    for other value types and ValueError for integers outside int64.
    """
    entries = []
    for name, value in features.items():
        if not isinstance(name, str):
            raise TypeError(f"feature names must be str, got {name!r}")
        entry = _encode_length_delimited(1, name.encode("utf-8")) + _encode_length_delimited(
            2, _encode_feature(name, value)
        )
        entries.append(_encode_length_delimited(1, entry))
    return _encode_length_delimited(1, b"".join(entries))


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def _temporary_sibling(path: Path) -> Path:
    """Return an unused hidden name next to `path` for writing before the final rename."""
    # Unlike tempfile.mkstemp, a file opened later with open(..., "x") gets the
    # usual permissions from the umask rather than 0600.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_tfrecord(
    path: str | os.PathLike,
    examples: Iterable[Mapping[str, object]],
    force: bool = False,
    compress: bool = False,
) -> int:
    """Write one `tf.train.Example` record per feature dict and return the record count.

    The file is written under a temporary name in the target folder and renamed
    into place when complete, so a failed write leaves no partial file.
    `compress=True` writes a gzip-compressed file. Raises `OutputExistsError`
    if `path` exists and `force` is false.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: exists already; pass force=True to overwrite it")
    if path.is_dir():
        raise OutputExistsError(f"{path}: is a folder; choose a file name for the TFRecord")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = _temporary_sibling(path)
    n_records = 0
    try:
        with open(temp_path, "xb") as raw:
            file: BinaryIO = gzip.GzipFile(fileobj=raw, mode="wb") if compress else raw
            try:
                for example in examples:
                    file.write(_frame_record(encode_example(example)))
                    n_records += 1
            finally:
                if compress:
                    file.close()
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    logger.debug("wrote %d records to %s", n_records, path)
    return n_records
