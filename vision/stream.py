"""Chair views streamed from TFRecord files in the course layout (`img`, `id`, `rot`, `ele`).

`ChairStream` yields the items that `ChairViews` returns for the same records,
decoding each PNG when its record is read, with no image cache. Items come in
file order (shuffled within the buffer), not sorted by chair and view as in
`ChairViews`. See `condgen.streaming.TFRecordStream` for sharding, shuffling and
index files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from condgen.errors import DataError, RecipeError
from condgen.streaming import TFRecordStream
from condgen.tfrecord import decode_example
from condgen.vision.chairs import (
    AZIMUTHS_DEG,
    ELEVATIONS_DEG,
    _parse_tfrecord_features,
    _resolve_chairs,
    _single_int,
    _validate_image_size,
    decode_chair_image,
)

__all__ = ["ChairStream", "SPLITS"]

# "all" yields every selected view, "train" leaves the held-out views out, "held_out" yields only them.
SPLITS = ("all", "train", "held_out")
PAYLOAD_FEATURES = ("img",)
# Names the label dicts of `_view_labels` in the labels cache; change it when they change.
LABELS_KEY = "chair-view-labels-v1"


def _view_labels(features: dict, where: str) -> dict[str, int]:
    """Check a record's `id`, `rot` and `ele` and return `chair_id`, `elevation_deg` and `azimuth_index`.

    The labels pass skips `img`, so its presence is checked only when the
    record is streamed.
    """
    missing = [name for name in ("id", "rot", "ele") if name not in features]
    if missing:
        raise DataError(
            f"{where}: missing feature(s) {', '.join(missing)}; a chair record has "
            f"img (PNG bytes), id, rot and ele (int64); found {', '.join(sorted(features)) or 'none'}"
        )
    chair_id = _single_int(features, "id", where)
    rot = _single_int(features, "rot", where)
    ele = _single_int(features, "ele", where)
    if chair_id < 0:
        raise DataError(f"{where}: chair id {chair_id} is negative; ids are positions in the sorted folder names")
    if not 0 <= rot < len(AZIMUTHS_DEG):
        raise DataError(f"{where}: rot {rot} is outside 0..{len(AZIMUTHS_DEG) - 1} (the azimuth index)")
    if not 0 <= ele < len(ELEVATIONS_DEG):
        raise DataError(f"{where}: ele {ele} is invalid; expected 0 (20 degrees) or 1 (30 degrees)")
    return {"chair_id": chair_id, "elevation_deg": ELEVATIONS_DEG[ele], "azimuth_index": rot}


class _ViewSelection:
    """Selection of the views that a stream yields: chosen chairs, then one side of the held-out split."""

    def __init__(
        self,
        chair_ids: set[int] | None,
        split: str,
        holdout_every: int,
        holdout_offset: int,
        holdout_chair_ids: set[int] | None,
    ):
        self.chair_ids = chair_ids
        self.split = split
        self.holdout_every = holdout_every
        self.holdout_offset = holdout_offset
        self.holdout_chair_ids = holdout_chair_ids

    def is_held_out(self, chair_id: int, azimuth_index: int) -> bool:
        if self.holdout_chair_ids is not None and chair_id not in self.holdout_chair_ids:
            return False
        return azimuth_index % self.holdout_every == self.holdout_offset

    def keeps(self, chair_id: int, azimuth_index: int) -> bool:
        if self.chair_ids is not None and chair_id not in self.chair_ids:
            return False
        if self.split == "all":
            return True
        return self.is_held_out(chair_id, azimuth_index) == (self.split == "held_out")


class _ViewParser:
    """Turn one chair record into an item as `ChairViews.__getitem__` returns it, or None when not selected.

    A class rather than a closure, so that DataLoader workers started with
    `spawn` can unpickle it.
    """

    def __init__(self, image_size: int, chair_names: list[str] | None, selection: _ViewSelection):
        self.image_size = image_size
        self.chair_names = chair_names
        self.selection = selection

    def chair_name(self, chair_id: int, where: str) -> str:
        if self.chair_names is None:
            return str(chair_id)
        if chair_id >= len(self.chair_names):
            raise DataError(
                f"{where}: chair id {chair_id}, but names lists only {len(self.chair_names)} chairs; "
                "pass all folder names of the rendered_chairs root the file was made from"
            )
        return self.chair_names[chair_id]

    def __call__(self, data: bytes, where: str) -> dict[str, Any] | None:
        features = decode_example(data, where)
        chair_id, elevation_deg, azimuth_index = _parse_tfrecord_features(features, where)
        chair = self.chair_name(chair_id, where)
        if not self.selection.keeps(chair_id, azimuth_index):
            return None
        pixels = decode_chair_image(features["img"][0], self.image_size, where)
        image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float().div_(255.0)  # [3, H, W]
        return {
            "image": image,
            "chair": chair,
            "chair_id": chair_id,
            "azimuth_deg": float(AZIMUTHS_DEG[azimuth_index]),
            "elevation_deg": float(elevation_deg),
        }


def _check_names(names: Sequence[str]) -> list[str]:
    if isinstance(names, (str, bytes)) or not all(isinstance(name, str) for name in names):
        raise RecipeError("names must be a list of chair folder names (str), such as list_chair_folders(root)")
    sorted_names = sorted(names)
    if len(set(sorted_names)) != len(sorted_names):
        raise RecipeError("names lists a chair more than once; pass each folder name once")
    return sorted_names


def _check_split(split: str, holdout_every: int, holdout_offset: int) -> None:
    if split not in SPLITS:
        raise RecipeError(f"split {split!r} is invalid; use one of {', '.join(SPLITS)}")
    if split == "all":
        return
    for name, value in (("holdout_every", holdout_every), ("holdout_offset", holdout_offset)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"held-out views: {name} must be an integer, got {value!r}")
    if not 1 <= holdout_every <= len(AZIMUTHS_DEG):
        raise RecipeError(
            f"held-out views: holdout_every must be from 1 to {len(AZIMUTHS_DEG)} (the number of azimuths) "
            f"for split {split!r}, got {holdout_every}"
        )
    if not 0 <= holdout_offset < holdout_every:
        raise RecipeError(f"held-out views: holdout_offset must be from 0 to holdout_every - 1 = {holdout_every - 1}, got {holdout_offset}")


class ChairStream(TFRecordStream):
    """Chair views from TFRecord files in the course layout, streamed and split between workers and ranks.

    Each item equals the `ChairViews` item of the same record read with the
    same `image_size` and `names`: `image` (float32 `[3, image_size,
    image_size]` in [0, 1], on white), `chair`, `chair_id`, `azimuth_deg` and
    `elevation_deg`.

    Args:
        paths: one or more chair TFRecord files, plain or gzip-compressed.
        image_size: side length of the output images in pixels.
        chairs: chair names or ids to keep; None keeps all.
        names: the chair folder names, sorted and indexed by the records'
            `id`. Without it a chair's name is its id as a string.
        shuffle_buffer, seed, index_paths, rank, world_size: see
            `TFRecordStream`.
        split: "all" yields every selected view. "train" leaves out the
            held-out views, and "held_out" yields only them. A view is held
            out when its chair is in `holdout_chairs` (every chair when None)
            and its azimuth index k (0-30) has
            `k % holdout_every == holdout_offset`, as in
            `split_held_out_views`.

    Without `names`, resolving `chairs` or `holdout_chairs` and reading
    `chair_names` need the labels of every record (see `metadata`).

    Raises:
        RecipeError: for an invalid `image_size`, `names` or split setting.
        LabelError: for unknown chairs in `chairs` or `holdout_chairs`.
        DataError: for a missing file or bad index, and while streaming, for
            a corrupt record or PNG.
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        image_size: int = 64,
        chairs: Iterable[str | int] | None = None,
        names: Sequence[str] | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        index_paths: Sequence[str | os.PathLike | None] | None = None,
        *,
        split: str = "all",
        holdout_every: int = 0,
        holdout_offset: int = 0,
        holdout_chairs: Iterable[str | int] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        self.image_size = _validate_image_size(image_size)
        _check_split(split, holdout_every, holdout_offset)
        self.split = split
        self._names = None if names is None else _check_names(names)
        # The parser is completed below, once the chair names are known.
        parser = _ViewParser(self.image_size, self._names, _ViewSelection(None, "all", 1, 0, None))
        super().__init__(
            paths,
            parser,
            shuffle_buffer=shuffle_buffer,
            seed=seed,
            index_paths=index_paths,
            rank=rank,
            world_size=world_size,
            parse_labels=_view_labels,
            payload_features=PAYLOAD_FEATURES,
            labels_key=LABELS_KEY,
        )
        chair_ids = None if chairs is None else _resolve_chairs(chairs, self.chair_names, "chairs")
        holdout_ids = None
        if holdout_chairs is not None and split != "all":
            holdout_ids = _resolve_chairs(holdout_chairs, self.chair_names, "held-out chairs")
        if split == "train" and holdout_every == 1 and holdout_ids is None:
            raise DataError(
                f"held-out views: holdout_every=1, offset=0 holds out every view of every chair, leaving none "
                "for training; raise holdout_every or list holdout_chairs"
            )
        parser.selection = _ViewSelection(chair_ids, split, holdout_every, holdout_offset, holdout_ids)
        self.selection = parser.selection

    @property
    def chair_names(self) -> list[str]:
        """The sorted vocabulary: `names`, or the ids up to the largest one in the files as strings."""
        if self._names is not None:
            return self._names
        all_labels = super().metadata
        if not all_labels:
            return []
        return [str(i) for i in range(max(labels["chair_id"] for labels in all_labels) + 1)]

    @property
    def metadata(self) -> list[dict]:
        """One label dict per yielded view, in file order, as `ChairViews.metadata` lists them.

        Raises `DataError` when no view is selected.
        """
        chair_names = self.chair_names
        rows = []
        for labels in super().metadata:
            chair_id = labels["chair_id"]
            azimuth_index = labels["azimuth_index"]
            if chair_id >= len(chair_names):
                raise DataError(
                    f"{', '.join(map(str, self.paths))}: a record has chair id {chair_id}, but names lists only "
                    f"{len(chair_names)} chairs; pass all folder names of the rendered_chairs root the file was made from"
                )
            if not self.selection.keeps(chair_id, azimuth_index):
                continue
            rows.append(
                {
                    "chair": chair_names[chair_id],
                    "chair_id": chair_id,
                    "azimuth_deg": float(AZIMUTHS_DEG[azimuth_index]),
                    "elevation_deg": float(labels["elevation_deg"]),
                    "azimuth_index": azimuth_index,
                }
            )
        if not rows:
            raise DataError(f"{', '.join(map(str, self.paths))}: no chair views left for split {self.split!r} after selecting chairs")
        return rows
