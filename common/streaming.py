"""Streaming reads of TFRecord files, record index files and the `condgen data index` command.

`NSynthNotes` and `ChairViews` read every record once to build an index before
training starts. `TFRecordStream` instead reads its files front to back in
every DataLoader worker. A file larger than memory, such as the 74 GB NSynth
train split, thus trains without a full scan first, in memory bounded by the
shuffle buffer.

Sharding: records are numbered across `paths` in order, and global record i
goes to shard `i % n_shards`, where `n_shards = world_size * n_workers` and a
worker reads shard `rank * n_workers + worker_id`. Over all ranks and workers,
one epoch thus yields every record exactly once.

Index files list one line `"<offset> <length>\\n"` per record, in decimal,
where `length` counts the 12-byte header, the data and the 4-byte data CRC.
This is the format that `tfrecord2idx` of the `tfrecord` package (1.14.6)
writes and its readers load. With an index, a worker seeks straight to its own
records. Without one, it reads each record header and seeks past the data of
other shards' records. A gzip file cannot seek, so every worker decompresses
the whole file and discards the records of other shards.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm import tqdm

from condgen.checkpoint import write_bytes_atomic
from condgen.errors import DataError, OutputExistsError
from condgen.tfrecord import (
    FOOTER_BYTES,
    HEADER_BYTES,
    _open_binary,
    _read_exactly,
    _where,
    decode_example,
    index_records,
    is_gzip_file,
    iter_records,
    read_record_data,
    read_record_header,
)

logger = logging.getLogger(__name__)

__all__ = [
    "INDEX_SUFFIX",
    "TFRecordStream",
    "default_index_path",
    "find_index",
    "write_index",
    "read_index",
    "shuffle_buffered",
    "plain_labels",
    "default_cache_dir",
]

INDEX_SUFFIX = ".tfindex"
# Bytes that framing adds to a record's data: the header plus the data CRC.
FRAME_BYTES = HEADER_BYTES + FOOTER_BYTES
# Bump when the JSON layout of cached labels changes, so that old files are not reused.
_LABELS_CACHE_VERSION = 1
_CACHE_ENV = "CONDGEN_CACHE_DIR"
# Largest piece read at once while discarding a record of another shard in a gzip file.
_DISCARD_CHUNK_BYTES = 1 << 20

# A parser of one record: `(record data, "file: record at byte N") -> item`, or None to drop the record.
RecordParser = Callable[[bytes, str], Any]
# A parser of one record's labels from its decoded features without the payload features.
LabelParser = Callable[[dict, str], dict]


# ---------------------------------------------------------------------------
# Index files
# ---------------------------------------------------------------------------


def default_index_path(tfrecord_path: str | os.PathLike) -> Path:
    """Return the conventional index path: `notes.tfrecord` -> `notes.tfindex`.

    A `.tfrecord` or `.tfr` suffix is replaced, as `tfrecord2idx` does for
    a folder. Other names, such as the shards `notes.tfrecord-00000-of-00010`,
    get `.tfindex` appended, so that shards of one set do not share an index.
    """
    path = Path(tfrecord_path)
    if path.suffix in (".tfrecord", ".tfr"):
        return path.with_suffix(INDEX_SUFFIX)
    return path.with_name(path.name + INDEX_SUFFIX)


def find_index(tfrecord_path: str | os.PathLike) -> Path | None:
    """Return `default_index_path(tfrecord_path)` if that file exists, else None."""
    candidate = default_index_path(tfrecord_path)
    return candidate if candidate.is_file() else None


def write_index(
    tfrecord_path: str | os.PathLike,
    index_path: str | os.PathLike | None = None,
    force: bool = False,
) -> int:
    """Write the index file of an uncompressed TFRecord file and return its number of records.

    `index_path` defaults to `default_index_path(tfrecord_path)`. Only the
    record headers are read, so the data CRCs are checked later, when the
    records are streamed. The file is written atomically. Raises
    `OutputExistsError` if the index exists and `force` is false, and
    `DataError` for a gzip, corrupt or truncated TFRecord file.
    """
    tfrecord_path = Path(tfrecord_path)
    index_path = Path(index_path) if index_path is not None else default_index_path(tfrecord_path)
    if index_path.exists() and not force:
        raise OutputExistsError(f"{index_path}: exists already; pass --force (force=True) to overwrite it")
    if index_path.is_dir():
        raise OutputExistsError(f"{index_path}: is a folder; choose a file name for the index")
    records = index_records(tfrecord_path)
    text = "".join(f"{offset} {length + FRAME_BYTES}\n" for offset, length in records)
    write_bytes_atomic(index_path, text.encode("ascii"))
    logger.debug("wrote the index of %d records of %s to %s", len(records), tfrecord_path, index_path)
    return len(records)


def _rebuild_hint(tfrecord_path: Path, index_path: Path) -> str:
    return f"rebuild it with: condgen data index {tfrecord_path} {index_path} --force"


def _parse_index_text(text: str, index_path: Path) -> np.ndarray:
    """Parse the lines of an index file into an int64 array `[n_records, 2]` of (offset, length)."""
    values: list[int] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not all(field.isdigit() for field in fields):
            raise DataError(
                f"{index_path}: line {line_number} is {line!r}, expected two decimal integers "
                "'<offset> <length>' as tfrecord2idx writes them; this is not a TFRecord index file"
            )
        values.append(int(fields[0]))
        values.append(int(fields[1]))
    return np.array(values, dtype=np.int64).reshape(-1, 2)


def read_index(index_path: str | os.PathLike, tfrecord_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read and check the index file of an uncompressed TFRecord file.

    Returns:
        `(offsets, lengths)`, two int64 arrays with one entry per record: the
        byte offset of the header and the number of data bytes (the index's
        length minus the 16 bytes of framing).

    Raises:
        DataError: for a missing or malformed index, or one that does not fit
            the file. The first offset must be 0, each record must start where
            the previous one ends, and the last one must end at the end of the
            file. The record headers at the offsets are checked when the
            records are read.
    """
    index_path = Path(index_path)
    tfrecord_path = Path(tfrecord_path)
    try:
        text = index_path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise DataError(f"{index_path}: index file not found; write it with: condgen data index {tfrecord_path} {index_path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{index_path}: cannot read the index file ({error}); {_rebuild_hint(tfrecord_path, index_path)}") from None
    table = _parse_index_text(text, index_path)
    offsets = table[:, 0].copy()
    framed_lengths = table[:, 1]
    file_size = tfrecord_path.stat().st_size

    too_short = np.flatnonzero(framed_lengths < FRAME_BYTES)
    if too_short.size:
        line = int(too_short[0])
        raise DataError(
            f"{index_path}: line {line + 1} gives the record length {framed_lengths[line]}, but a record "
            f"takes at least {FRAME_BYTES} bytes; {_rebuild_hint(tfrecord_path, index_path)}"
        )
    ends = offsets + framed_lengths
    expected_offsets = np.concatenate(([0], ends[:-1])) if len(offsets) else offsets
    misplaced = np.flatnonzero(offsets != expected_offsets)
    if misplaced.size:
        line = int(misplaced[0])
        raise DataError(
            f"{index_path}: line {line + 1} gives the offset {offsets[line]}, but the record before it ends at "
            f"byte {expected_offsets[line]}, so the offset does not point at a record header of {tfrecord_path}; "
            f"{_rebuild_hint(tfrecord_path, index_path)}"
        )
    indexed_size = int(ends[-1]) if len(ends) else 0
    if indexed_size != file_size:
        raise DataError(
            f"{index_path}: its {len(offsets)} records end at byte {indexed_size}, but {tfrecord_path} has "
            f"{file_size} bytes, so the index belongs to another file or to an older version of it; "
            f"{_rebuild_hint(tfrecord_path, index_path)}"
        )
    return offsets, framed_lengths - FRAME_BYTES


# ---------------------------------------------------------------------------
# Reading one file
# ---------------------------------------------------------------------------


def _discard_record_data(file: BinaryIO, name: str, offset: int, length: int, compressed: bool, file_size: int | None) -> None:
    """Move past a record's data and data CRC without checking them (another shard does)."""
    n_bytes = length + FOOTER_BYTES
    if not compressed:
        if offset + HEADER_BYTES + n_bytes > file_size:
            raise DataError(
                f"{_where(name, offset, compressed)}: truncated TFRecord file: the record declares {length} data "
                f"bytes plus a {FOOTER_BYTES}-byte CRC, but only {file_size - offset - HEADER_BYTES} bytes remain. "
                "The file was cut short; copy or write it again"
            )
        file.seek(n_bytes, os.SEEK_CUR)
        return
    remaining = n_bytes
    while remaining:
        chunk = _read_exactly(file, min(remaining, _DISCARD_CHUNK_BYTES), name, compressed)
        if not chunk:
            raise DataError(
                f"{_where(name, offset, compressed)}: truncated TFRecord file: the record declares {length} data "
                f"bytes plus a {FOOTER_BYTES}-byte CRC, but only {n_bytes - remaining} bytes remain. "
                "The file was cut short; copy or write it again"
            )
        remaining -= len(chunk)


def _read_sequential(path: Path, compressed: bool, selected: Callable[[int], bool]) -> Iterator[tuple[bytes, str]]:
    """Yield `(data, where)` of the records i of one file with `selected(i)`, and return the file's record count.

    Every header is read and its length CRC checked, and the data CRC of
    every yielded record. Other records are skipped by a seek in an
    uncompressed file, and read and discarded in a gzip file.
    """
    name = str(path)
    raw = _open_binary(path)
    file: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
    file_size = None if compressed else os.fstat(raw.fileno()).st_size
    try:
        offset = 0
        n_records = 0
        while True:
            length = read_record_header(file, name, offset, compressed)
            if length is None:
                return n_records
            if selected(n_records):
                data = read_record_data(file, name, offset, length, compressed)
                yield data, _where(name, offset, compressed)
            else:
                _discard_record_data(file, name, offset, length, compressed, file_size)
            offset += FRAME_BYTES + length
            n_records += 1
    finally:
        file.close()
        raw.close()


def _read_indexed(
    path: Path, index_path: Path, offsets: np.ndarray, lengths: np.ndarray, positions: range
) -> Iterator[tuple[bytes, str]]:
    """Yield `(data, where)` of the records at `positions` of an indexed file, seeking to each one."""
    name = str(path)
    with _open_binary(path) as file:
        for position in positions:
            offset = int(offsets[position])
            file.seek(offset)
            try:
                length = read_record_header(file, name, offset)
            except DataError as error:
                raise DataError(f"{error}. The offset comes from the index {index_path}; {_rebuild_hint(path, index_path)}") from None
            if length is None:
                raise DataError(
                    f"{name}: ends before byte {offset}, where the index {index_path} places a record; "
                    f"{_rebuild_hint(path, index_path)}"
                )
            if length != lengths[position]:
                raise DataError(
                    f"{_where(name, offset, False)}: the header declares {length} data bytes, but the index "
                    f"{index_path} gives {lengths[position]}; {_rebuild_hint(path, index_path)}"
                )
            yield read_record_data(file, name, offset, length), _where(name, offset, False)


class _ShardMembership:
    """Test whether record i of a file, whose first record has the global number `first`, is in `shard`."""

    def __init__(self, first: int, shard: int, n_shards: int):
        self.first = first
        self.shard = shard
        self.n_shards = n_shards

    def __call__(self, i: int) -> bool:
        return (self.first + i) % self.n_shards == self.shard


def shuffle_buffered(items: Iterable[Any], buffer_size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Yield `items` in an order shuffled within a buffer of `buffer_size` items.

    The buffer is filled first. Then each new item replaces a randomly chosen
    buffered item, which is yielded, and at the end the rest of the buffer is
    yielded in random order. The buffer keeps at most `buffer_size` items plus
    the one being yielded, and the item at output position p is among the
    first `p + buffer_size` inputs. A buffer of 0 or 1 keeps the input order.
    """
    if buffer_size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        position = int(rng.integers(buffer_size))
        yield buffer[position]
        buffer[position] = item
    rng.shuffle(buffer)
    yield from buffer


# ---------------------------------------------------------------------------
# Labels and their cache
# ---------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Return `$CONDGEN_CACHE_DIR`, or `~/.cache/condgen` when that variable is unset or empty."""
    return Path(os.environ.get(_CACHE_ENV) or os.path.join("~", ".cache", "condgen")).expanduser()


def plain_labels(features: dict, where: str) -> dict:
    """Convert decoded features to JSON values: numbers, UTF-8 strings, or lists of them.

    A feature with one value becomes that value, and a feature with several
    a list. Raises `DataError` for a bytes feature that is not UTF-8 text,
    which should be listed among the payload features instead.
    """
    labels: dict[str, Any] = {}
    for name, value in features.items():
        if isinstance(value, np.ndarray):
            values = value.tolist()
        else:
            try:
                values = [item.decode("utf-8") for item in value]
            except UnicodeDecodeError:
                raise DataError(
                    f"{where}: feature {name!r} is binary, not UTF-8 text, so it cannot be a label; "
                    "list it in payload_features"
                ) from None
        labels[name] = values[0] if len(values) == 1 else values
    return labels


# ---------------------------------------------------------------------------
# The stream
# ---------------------------------------------------------------------------


def _as_path_list(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(path) for path in paths]


def _resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Return explicit `(rank, world_size)`, else those of an initialised process group, else (0, 1)."""
    if rank is None and world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1
    if rank is None or world_size is None:
        raise ValueError(f"pass both rank and world_size or neither, got rank={rank!r}, world_size={world_size!r}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an integer of at least 1, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer from 0 to world_size - 1 = {world_size - 1}, got {rank!r}")
    return rank, world_size


class TFRecordStream(IterableDataset):
    """Records of TFRecord files, streamed front to back and split between DataLoader workers and ranks.

    Each record's data goes through `parse(data, where)`, where `where` reads
    "file: record at byte N", and the returned item is yielded unless it is
    None. Framing and CRCs are checked as by `condgen.tfrecord.iter_records`,
    and a gzip file is recognised by its first two bytes.

    Args:
        paths: one or more TFRecord files, plain or gzip-compressed.
        parse: turns a record into an item, or None to drop it. It runs in
            the DataLoader workers, so it must be picklable under the
            `spawn` start method.
        shuffle_buffer: items held for shuffling, per worker; 0 or 1 keeps
            the file order. See `shuffle_buffered`.
        seed: seeds the shuffle together with the epoch and the shard.
        index_paths: for each path, its index file or None. An index is used
            for uncompressed files only; for a gzip file it is ignored with a
            warning.
        rank, world_size: this process's place among the data-parallel
            processes. When both are None, they come from the initialised
            `torch.distributed` process group at construction, or are 0 and 1.
        parse_labels: turns a record's features, decoded without
            `payload_features`, into its label dict for `metadata`. Defaults
            to `plain_labels`.
        payload_features: names of the large features (such as `audio` or
            `img`) that the labels pass skips without decoding.
        labels_key: names what `parse_labels` returns, for the labels cache;
            change it when that output changes. Defaults to the function's
            module and qualified name.

    The number of records is known only from `count_records()`, so the stream
    has no `len()`. Shards differ by at most one record (more when `parse`
    drops records), so ranks may get different numbers of batches per epoch.

    Raises:
        DataError: for a missing path or index, or an index that does not
            fit its file; during iteration, for a corrupt or truncated record.
        ValueError: for invalid `shuffle_buffer`, `seed`, `rank` or
            `world_size`.
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        parse: RecordParser,
        shuffle_buffer: int = 0,
        seed: int = 0,
        index_paths: Sequence[str | os.PathLike | None] | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        parse_labels: LabelParser | None = None,
        payload_features: Collection[str] = (),
        labels_key: str | None = None,
    ):
        self.paths = _as_path_list(paths)
        if not self.paths:
            raise DataError("no TFRecord paths given; pass one or more TFRecord files")
        for path in self.paths:
            if not path.exists():
                raise DataError(f"{path}: TFRecord file not found; check the path")
            if not path.is_file():
                raise DataError(f"{path}: is not a file; streaming reads TFRecord files only")
        if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be an integer of at least 0 (0 keeps the file order), got {shuffle_buffer!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.parse = parse
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank, self.world_size = _resolve_rank(rank, world_size)
        self.parse_labels = parse_labels or plain_labels
        self.payload_features = tuple(sorted(payload_features))
        self.labels_key = labels_key or f"{self.parse_labels.__module__}.{self.parse_labels.__qualname__}"
        self.epoch = 0

        self._compressed = [is_gzip_file(path) for path in self.paths]
        self.index_paths = self._check_index_paths(index_paths)
        self._indexes: list[tuple[np.ndarray, np.ndarray] | None] = [
            None if index_path is None else read_index(index_path, path)
            for path, index_path in zip(self.paths, self.index_paths)
        ]
        self._counts: dict[int, int] = {}
        self._metadata: list[dict] | None = None

    def _check_index_paths(self, index_paths: Sequence[str | os.PathLike | None] | None) -> list[Path | None]:
        if index_paths is None:
            return [None] * len(self.paths)
        if isinstance(index_paths, (str, os.PathLike)):
            index_paths = [index_paths]
        if len(index_paths) != len(self.paths):
            raise ValueError(f"index_paths has {len(index_paths)} entries for {len(self.paths)} paths; give one index path or None per path")
        checked: list[Path | None] = []
        for path, index_path, compressed in zip(self.paths, index_paths, self._compressed):
            if index_path is not None and compressed:
                logger.warning(
                    "%s is gzip-compressed, so its index %s is not used: every worker reads the whole file",
                    path, index_path,
                )
                index_path = None
            checked.append(None if index_path is None else Path(index_path))
        return checked

    # -- epochs and shards ---------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the next iteration's shuffle, with `seed` and the shard.

        DataLoader workers get a copy of the stream when an iteration starts,
        so call this before iterating. NOTE: with `persistent_workers=True`
        the workers keep the copy of the first epoch, and the order repeats.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer of at least 0, got {epoch!r}")
        self.epoch = epoch

    def _count_file(self, file_number: int) -> int:
        index = self._indexes[file_number]
        if index is not None:
            return len(index[0])
        if file_number not in self._counts:
            path = self.paths[file_number]
            if self._compressed[file_number]:
                reader = _read_sequential(path, True, lambda i: False)
                try:
                    while True:
                        next(reader)
                except StopIteration as stop:
                    self._counts[file_number] = stop.value
            else:
                self._counts[file_number] = len(index_records(path))
        return self._counts[file_number]

    def count_records(self) -> int:
        """Return the number of records in all files.

        An index gives the count at once. Otherwise only the record headers
        are read, with a seek past each record's data; a gzip file must be
        decompressed for that. Counts are kept for later calls.
        """
        return sum(self._count_file(file_number) for file_number in range(len(self.paths)))

    def records_per_shard(self, rank: int, world_size: int, n_workers: int) -> list[int]:
        """Return the number of records that each DataLoader worker of `rank` reads in one epoch.

        Entry w is for worker w, so the sum is the rank's share. `n_workers`
        0 (loading in the main process) counts as one worker.
        """
        rank, world_size = _resolve_rank(rank, world_size)
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 0:
            raise ValueError(f"n_workers must be an integer of at least 0, got {n_workers!r}")
        n_workers = max(1, n_workers)
        n_shards = world_size * n_workers
        total = self.count_records()
        return [len(range(rank * n_workers + worker, total, n_shards)) for worker in range(n_workers)]

    def _iter_shard_records(self, shard: int, n_shards: int) -> Iterator[tuple[bytes, str]]:
        """Yield `(data, where)` of the records of one shard, file by file."""
        first = 0  # global number of the current file's first record
        for file_number, path in enumerate(self.paths):
            index = self._indexes[file_number]
            if index is not None:
                offsets, lengths = index
                positions = range((shard - first) % n_shards, len(offsets), n_shards)
                yield from _read_indexed(path, self.index_paths[file_number], offsets, lengths, positions)
                n_records = len(offsets)
            else:
                selected = _ShardMembership(first, shard, n_shards)
                n_records = yield from _read_sequential(path, self._compressed[file_number], selected)
            first += n_records

    def __iter__(self) -> Iterator[Any]:
        worker = get_worker_info()
        worker_id, n_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        shard = self.rank * n_workers + worker_id
        n_shards = self.world_size * n_workers
        # SeedSequence takes non-negative entropy, so a negative seed wraps to uint64.
        rng = np.random.default_rng([self.seed % (1 << 64), self.epoch, shard])
        return shuffle_buffered(self._parse_records(shard, n_shards), self.shuffle_buffer, rng)

    def _parse_records(self, shard: int, n_shards: int) -> Iterator[Any]:
        for data, where in self._iter_shard_records(shard, n_shards):
            item = self.parse(data, where)
            if item is not None:
                yield item

    # -- labels --------------------------------------------------------------

    @property
    def metadata(self) -> list[dict]:
        """One label dict per record of all files, in file order, without the payload features.

        The first access reads every record once and decodes only the small
        features. Each file's labels are then cached as JSON in
        `default_cache_dir()/labels/`, keyed by the file's resolved path, size
        and modification time and by `labels_key`, so later processes read
        the JSON instead.
        """
        if self._metadata is None:
            metadata: list[dict] = []
            for file_number in range(len(self.paths)):
                metadata.extend(self._file_labels(file_number))
            self._metadata = metadata
        return self._metadata

    def _labels_cache_path(self, path: Path) -> Path:
        stat = path.stat()
        key = {
            "version": _LABELS_CACHE_VERSION,
            "path": str(path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "labels": self.labels_key,
            "skip": list(self.payload_features),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:24]
        return default_cache_dir() / "labels" / f"{path.name}-{digest}.json"

    def _file_labels(self, file_number: int) -> list[dict]:
        path = self.paths[file_number]
        cache_path = self._labels_cache_path(path)
        try:
            cached = json.loads(cache_path.read_text(encoding="utf-8"))
            if isinstance(cached, list) and all(isinstance(labels, dict) for labels in cached):
                logger.debug("read the labels of %s from %s", path, cache_path)
                return cached
            logger.warning("ignoring the labels cache %s: it does not contain a list of label dicts", cache_path)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as error:
            logger.warning("ignoring the unreadable labels cache %s (%s); reading the labels again", cache_path, error)

        labels_list = []
        progress = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"labels of {path.name}", disable=None, leave=False)
        with progress:
            for offset, data in iter_records(path):
                where = _where(str(path), offset, self._compressed[file_number])
                features = decode_example(data, where, skip=self.payload_features)
                labels_list.append(self.parse_labels(features, where))
                progress.update(len(data) + FRAME_BYTES)
        try:
            write_bytes_atomic(cache_path, json.dumps(labels_list).encode("utf-8"))
        except OSError as error:
            logger.warning("cannot write the labels cache %s (%s); the labels will be read again next time", cache_path, error)
        return labels_list

    # -- pickling and display -------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Workers do not need the labels, and pickling a list of 300,000 dicts
        # for every worker at every epoch takes seconds.
        state = self.__dict__.copy()
        state["_metadata"] = None
        return state

    def __repr__(self) -> str:
        names = ", ".join(str(path) for path in self.paths)
        return (
            f"{type(self).__name__}({names}, shuffle_buffer={self.shuffle_buffer}, seed={self.seed}, "
            f"rank={self.rank}, world_size={self.world_size})"
        )


# ---------------------------------------------------------------------------
# condgen data index
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `condgen data index` to `parser`."""
    parser.add_argument("tfrecord", type=Path, metavar="TFRECORD", help="uncompressed TFRecord file to index")
    parser.add_argument(
        "index",
        type=Path,
        nargs="?",
        default=None,
        metavar="INDEX",
        help=f"index file to write (default: TFRECORD with the suffix {INDEX_SUFFIX}, which streaming readers find on their own)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing index file")


def run(args: argparse.Namespace) -> int:
    """Run `condgen data index` with parsed arguments; return the exit status."""
    index_path = args.index if args.index is not None else default_index_path(args.tfrecord)
    n_records = write_index(args.tfrecord, index_path, force=args.force)
    logger.info("wrote the index of %d records of %s to %s", n_records, args.tfrecord, index_path)
    return 0
