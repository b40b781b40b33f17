"""The `chairs` domain: rendered chair views as training data for the image heads.

Each item is one view of one chair. Its labels are the chair's name (`chair`),
its id (`chair_id`), the camera's azimuth and elevation in degrees
(`azimuth_deg`, `elevation_deg`) and the azimuth's position among the
dataset's 31 azimuths (`azimuth_index`, 0-30). A recipe conditions on any of
them: the angles as periodic labels, the names and indices as categorical ones.

Every `holdout_every`-th azimuth of the held-out chairs is kept out of training,
so that a trained model can be checked on views it never saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import default_collate

from condgen.errors import RecipeError
from condgen.registry import DomainSpec

N_AZIMUTHS = 31


@dataclass
class ChairsDataConfig:
    """The `[data]` table of a chairs recipe.

    `root` is a `rendered_chairs` folder (`<root>/<chair>/renders/*.png`) or a
    TFRecord file of the same renders. `chairs` keeps only the listed chair
    names or ids, and an empty list keeps every chair. `names` lists the
    folder names that the ids of a TFRecord file refer to. Without it, a chair
    read from a TFRecord is named by its id.

    Held-out views: an image is kept out of training when its chair is in
    `holdout_chairs` (every chair when the list is empty) and its azimuth index
    k (0-30) has `k % holdout_every == holdout_offset`, at both elevations.
    `holdout_every = 0` trains on every view.

    `cache` keeps the resized images in a memory-mapped file under `cache_dir`
    (empty: `$CONDGEN_CACHE_DIR/chairs` or `~/.cache/condgen/chairs`).

    `streaming = true` reads a TFRecord `root` front to back in the DataLoader
    workers and decodes every PNG when its record is read, without the image
    cache (`condgen.vision.stream`). Each worker shuffles within a buffer of
    `shuffle_buffer` views, and 0 keeps the file order. An index file next to
    the TFRecord (`condgen data index FILE`) is used when present.
    """

    root: str = "data/chairs/rendered_chairs"
    image_size: int = 64
    chairs: list[str | int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    holdout_every: int = 4
    holdout_offset: int = 0
    holdout_chairs: list[str | int] = field(default_factory=list)
    cache: bool = True
    cache_dir: str = ""
    streaming: bool = False
    shuffle_buffer: int = 1024

    def __post_init__(self) -> None:
        if not self.root:
            raise RecipeError("data.root is empty; give a rendered_chairs folder or a chairs TFRecord file, e.g. data.root=data/chairs/rendered_chairs")
        if not 8 <= self.image_size <= 1024:
            raise RecipeError(f"data.image_size must be from 8 to 1024 pixels, got {self.image_size}")
        if not 0 <= self.holdout_every <= N_AZIMUTHS:
            raise RecipeError(f"data.holdout_every must be from 0 (hold out nothing) to {N_AZIMUTHS} (the number of azimuths), got {self.holdout_every}")
        if self.holdout_every and not 0 <= self.holdout_offset < self.holdout_every:
            raise RecipeError(f"data.holdout_offset must be from 0 to holdout_every - 1 = {self.holdout_every - 1}, got {self.holdout_offset}")
        if self.holdout_chairs and not self.holdout_every:
            raise RecipeError("data.holdout_chairs is set but data.holdout_every is 0, which selects no held-out views; set data.holdout_every (e.g. 4) or remove data.holdout_chairs")
        if isinstance(self.shuffle_buffer, bool) or not isinstance(self.shuffle_buffer, int) or self.shuffle_buffer < 0:
            raise RecipeError(
                f"data.shuffle_buffer must be an integer of at least 0 (0 keeps the file order), got {self.shuffle_buffer!r}; "
                "e.g. data.shuffle_buffer=1024"
            )


def build_datasets(config: ChairsDataConfig, seed: int):
    """Read the chair views and split them into `(train, held_out)`; `held_out` is None when `holdout_every` is 0.

    The split depends on the labels alone. `seed` only seeds the shuffle when
    `streaming` is set, and then both parts are `ChairStream`s over the same
    file.
    """
    if config.streaming:
        return _build_streams(config, seed)
    from condgen.vision.chairs import ChairViews, split_held_out_views

    dataset = ChairViews(
        Path(config.root).expanduser(),
        image_size=config.image_size,
        chairs=config.chairs or None,
        names=config.names or None,
        cache=config.cache,
        cache_dir=config.cache_dir or None,
    )
    if not config.holdout_every:
        return dataset, None
    return split_held_out_views(dataset, every=config.holdout_every, offset=config.holdout_offset, chairs=config.holdout_chairs or None)


def _build_streams(config: ChairsDataConfig, seed: int):
    from condgen.streaming import find_index
    from condgen.vision.stream import ChairStream

    path = Path(config.root).expanduser()
    if path.is_dir():
        raise RecipeError(
            f"data.root {path} is a folder, but data.streaming = true reads a TFRecord file only; "
            "give a chairs TFRecord file, or set data.streaming = false to read the folder"
        )
    options = dict(
        image_size=config.image_size,
        chairs=config.chairs or None,
        names=config.names or None,
        shuffle_buffer=config.shuffle_buffer,
        seed=seed,
        index_paths=[find_index(path)],
        holdout_every=config.holdout_every,
        holdout_offset=config.holdout_offset,
        holdout_chairs=config.holdout_chairs or None,
    )
    if not config.holdout_every:
        return ChairStream(path, split="all", **options), None
    return ChairStream(path, split="train", **options), ChairStream(path, split="held_out", **options)


def azimuth_index(azimuth_deg: float) -> int:
    """Return the position (0-30) of one of the dataset's azimuths, floor(k * 360 / 31) degrees."""
    from condgen.vision.chairs import AZIMUTHS_DEG

    wrapped = azimuth_deg % 360.0
    for index, value in enumerate(AZIMUTHS_DEG):
        if math.isclose(wrapped, value, abs_tol=1e-6):
            return index
    raise ValueError(f"azimuth {azimuth_deg} is not one of the dataset's {N_AZIMUTHS} azimuths")


def collate_views(items: list[dict]) -> tuple[dict[str, list], torch.Tensor]:
    """Batch chair items into raw label lists and images `[B, 3, H, W]` in [0, 1]."""
    labels = {
        "chair": [item["chair"] for item in items],
        "chair_id": [item["chair_id"] for item in items],
        "azimuth_deg": [item["azimuth_deg"] for item in items],
        "elevation_deg": [item["elevation_deg"] for item in items],
        "azimuth_index": [item["azimuth_index"] if "azimuth_index" in item else azimuth_index(item["azimuth_deg"]) for item in items],
    }
    # Inside a DataLoader worker, default_collate writes the batch straight into
    # shared memory, sparing the worker's heap (see the NSynth collate_notes).
    images = default_collate([item["image"] for item in items])
    return labels, images


DOMAIN = DomainSpec(
    name="chairs",
    config_class=ChairsDataConfig,
    build_datasets=build_datasets,
    collate=collate_views,
    media="image",
)
