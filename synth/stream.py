"""NSynth notes streamed from TFRecord files, for training on splits larger than memory.

`NSynthStream` yields the items that `NSynthNotes.__getitem__` returns for the
same records, with the same label and audio checks, but reads each file front
to back in the DataLoader workers (see `condgen.streaming.TFRecordStream` for
sharding, shuffling and index files). Only TFRecord files can be streamed;
json/wav folders and folders of named WAVs need `NSynthNotes`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from condgen.errors import DataError
from condgen.streaming import TFRecordStream
from condgen.synth.nsynth import (
    REQUIRED_FIELDS,
    NSynthFilter,
    _audio_from_features,
    _check_audio_values,
    _labels_from_row,
    _row_from_features,
)
from condgen.tfrecord import decode_example

__all__ = ["NSynthStream"]

# Features that the labels pass skips: the 64,000 float32 samples of each note.
PAYLOAD_FEATURES = ("audio",)
# Names the label dicts of `_note_labels` in the labels cache; change it when they change.
LABELS_KEY = "nsynth-labels-v1"


def _note_labels(features: dict, where: str) -> dict[str, Any]:
    """Check a record's label features and return its labels as `NSynthNotes.metadata` lists them."""
    missing = [key for key in (*REQUIRED_FIELDS, "sample_rate") if key not in features]
    if missing:
        raise DataError(
            f"{where}: missing feature {', '.join(repr(key) for key in missing)}; an NSynth record "
            f"needs at least {', '.join(REQUIRED_FIELDS)}, sample_rate and audio"
        )
    return _labels_from_row(_row_from_features(features, where), where)


def _check_audio_range(where: str, audio: np.ndarray) -> None:
    """Raise the `NSynthNotes` error for audio with NaN, infinite or out-of-range samples.

    Two reductions without temporary arrays are cheaper than the checks of
    `_check_audio_values`, which only runs, to build the message, for a bad note.
    """
    high = float(audio.max())
    low = float(audio.min())
    # A NaN fails both comparisons, so it takes this branch too.
    if not (-1.0 <= low and high <= 1.0):
        _check_audio_values(where, audio)


class _NoteParser:
    """Turn one NSynth record into an item, or None when the filter drops it.

    A class rather than a closure, so that DataLoader workers started with
    `spawn` can unpickle it.
    """

    def __init__(self, filters: NSynthFilter | None):
        self.filters = filters

    def __call__(self, data: bytes, where: str) -> dict[str, Any] | None:
        features = decode_example(data, where)
        labels = _note_labels(features, where)
        if self.filters is not None and not self.filters.matches(labels):
            return None
        audio = _audio_from_features(features, where)
        _check_audio_range(where, audio)
        item = dict(labels)
        item["qualities"] = None if item["qualities"] is None else list(item["qualities"])
        item["audio"] = torch.from_numpy(audio)
        return item


class NSynthStream(TFRecordStream):
    """NSynth notes from TFRecord files, streamed and split between DataLoader workers and ranks.

    Each item equals `NSynthNotes(paths, filters)[i]` for the same record:
    `audio` (torch.float32 `[N_SAMPLES]` in [-1, 1]) and the label fields.
    `metadata` lists the labels of the notes that pass `filters`, in file
    order. A note that fails the filter is still read by its worker, but its
    audio is not checked or converted.

    Args:
        paths: one or more NSynth TFRecord files, plain or gzip-compressed.
        filters: keeps only matching notes; None keeps all.
        shuffle_buffer: notes held for shuffling, per worker (256 KB each);
            0 keeps the file order.
        seed: seeds the shuffle, with the epoch (`set_epoch`) and the shard.
        index_paths: for each path, its index file (`condgen data index`) or
            None.
        rank, world_size: see `TFRecordStream`.

    Raises:
        DataError: at construction, for a missing file or a bad index. While
            streaming, for a corrupt record, missing label fields, or audio
            that is not 64,000 finite samples in [-1, 1].
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        filters: NSynthFilter | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        index_paths: Sequence[str | os.PathLike | None] | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__(
            paths,
            _NoteParser(filters),
            shuffle_buffer=shuffle_buffer,
            seed=seed,
            index_paths=index_paths,
            rank=rank,
            world_size=world_size,
            parse_labels=_note_labels,
            payload_features=PAYLOAD_FEATURES,
            labels_key=LABELS_KEY,
        )
        self.filters = filters

    @property
    def metadata(self) -> list[dict]:
        """Labels of the notes that pass the filter, in file order, as `NSynthNotes.metadata` lists them.

        Raises `DataError` when no note passes the filter.
        """
        all_labels = super().metadata
        if self.filters is None:
            return all_labels
        matching = [labels for labels in all_labels if self.filters.matches(labels)]
        if not matching:
            names = ", ".join(str(path) for path in self.paths)
            raise DataError(f"no notes in {names} pass the filter {self.filters}; widen the filter")
        return matching

    def records_per_shard(self, rank: int, world_size: int, n_workers: int) -> list[int]:
        """Return the number of notes that each DataLoader worker of `rank` yields in one epoch.

        Without filters this counts records, as `TFRecordStream` does. With
        filters it counts the notes that pass them, which needs the labels of
        every record (see `metadata`).
        """
        counts = super().records_per_shard(rank, world_size, n_workers)
        if self.filters is None:
            return counts
        n_workers = len(counts)
        n_shards = world_size * n_workers
        matching = [0] * n_workers
        for i, labels in enumerate(super().metadata):
            shard = i % n_shards
            if shard // n_workers == rank and self.filters.matches(labels):
                matching[shard % n_workers] += 1
        return matching
