"""Readers for chair renders in the "Seeing 3D Chairs" layout and its TFRecord form.

Two layouts hold the same images:

- The `rendered_chairs` folder layout (Aubry et al., "Seeing 3D Chairs",
  CVPR 2014): `<root>/<chair>/renders/image_XXX_pPPP_tTTT_r096.png`, one
  folder per chair. `pPPP` is the elevation and `tTTT` the azimuth, both in
  whole degrees. `XXX` is only a running number and is ignored. Chair ids are
  the positions of the folder names in sorted order.
- The TFRecord layout: one `tf.train.Example` per image with `img` (the PNG
  file bytes), `id` (int64, the position of the chair's folder in sorted
  order), `rot` (azimuth index 0-30) and `ele` (0 for 20 degrees, 1 for 30).

`ChairViews` reads either one into the same items, and
`split_held_out_views` holds out every n-th azimuth of some chairs.

Images are converted to RGB with any transparency composited on white, and
padded to a square with white when needed. They are resized with Pillow's BOX
filter, which makes each output pixel the area-weighted mean of the source
pixels it covers. A 600x600 render thus shrinks without aliasing and without
the overshoot of Lanczos.

Decoding the 600x600 PNGs is the slow part, so resized images are cached as
one uint8 `.npy` array per dataset and image size, read memory-mapped. The
cache lives in `$CONDGEN_CACHE_DIR/chairs/`, or `~/.cache/condgen/chairs/`
when that variable is unset. A change to any source file (size or
modification time) gives a new cache file. To free the space, call
`condgen.vision.chairs.clear_cache()` or delete that folder.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import io
import itertools
import json
import logging
import os
import re
import struct
import uuid
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from condgen import tfrecord
from condgen.errors import DataError, LabelError, RecipeError

logger = logging.getLogger(__name__)

__all__ = [
    "AZIMUTHS_DEG",
    "ELEVATIONS_DEG",
    "RENDER_NAME_PATTERN",
    "RESIZE_METHOD",
    "MAX_SOURCE_PIXELS",
    "RenderView",
    "ChairViews",
    "split_held_out_views",
    "list_chair_folders",
    "parse_render_name",
    "render_file_name",
    "decode_png_rgb",
    "resize_square",
    "decode_chair_image",
    "default_cache_dir",
    "clear_cache",
]

# The dataset's 31 azimuths: floor(k * 360 / 31) degrees for k = 0..30.
AZIMUTHS_DEG: tuple[int, ...] = tuple(k * 360 // 31 for k in range(31))
# Elevations of the dataset, indexed by the TFRecord `ele` feature.
ELEVATIONS_DEG: tuple[int, ...] = (20, 30)
RENDER_NAME_PATTERN = "image_XXX_pPPP_tTTT_r096.png"
_RENDER_NAME_RE = re.compile(r"image_(\d{3})_p(\d{3})_t(\d{3})_r(\d{3})\.png")
MAX_ELEVATION_DEG = 90

RESIZE_METHOD = "box"
_RESAMPLE = Image.Resampling.BOX
MAX_IMAGE_SIZE = 4096
# Largest source image decoded, in pixels. The renders are 600x600, so this
# leaves ample room while rejecting images whose header would make Pillow
# allocate gigabytes (a decompression bomb).
MAX_SOURCE_PIXELS = 4096 * 4096

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TFRECORD_FEATURES = ("img", "id", "rot", "ele")
# Bump when the cached array layout or the decoding changes, so old caches are not reused.
_CACHE_FORMAT_VERSION = 1
_CACHE_ENV = "CONDGEN_CACHE_DIR"
_CACHE_THREADS = min(4, os.cpu_count() or 1)
_FOLDER_HINT = f"<root>/<chair>/renders/{RENDER_NAME_PATTERN}"


# ---------------------------------------------------------------------------
# File names
# ---------------------------------------------------------------------------


class RenderView(NamedTuple):
    """The view that a render's file name encodes, in whole degrees."""

    elevation_deg: int
    azimuth_deg: int
    azimuth_index: int


def parse_render_name(name: str, folder: str | os.PathLike | None = None) -> RenderView:
    """Parse `image_XXX_pPPP_tTTT_r096.png` into its elevation and azimuth.

    The view comes from `pPPP` and `tTTT` alone, never from `XXX`. The azimuth
    must be one of `AZIMUTHS_DEG`, and the elevation at most 90 degrees.
    Raises `DataError` naming the file (inside `folder`, when given) and the
    expected pattern.
    """
    where = str(Path(folder) / name) if folder is not None else name
    match = _RENDER_NAME_RE.fullmatch(name)
    if match is None:
        raise DataError(
            f"{where}: file name does not match {RENDER_NAME_PATTERN} "
            "(XXX: 3-digit image number, PPP: elevation, TTT: azimuth, both in whole degrees); "
            "rename the file or move it out of the renders folder"
        )
    elevation_deg = int(match.group(2))
    azimuth_deg = int(match.group(3))
    if elevation_deg > MAX_ELEVATION_DEG:
        raise DataError(f"{where}: elevation p{elevation_deg:03d} is above {MAX_ELEVATION_DEG} degrees; expected p020 or p030")
    if azimuth_deg not in AZIMUTHS_DEG:
        valid = " ".join(f"t{value:03d}" for value in AZIMUTHS_DEG)
        raise DataError(f"{where}: azimuth t{azimuth_deg:03d} is not one of the dataset's 31 azimuths floor(k*360/31): {valid}")
    return RenderView(elevation_deg, azimuth_deg, AZIMUTHS_DEG.index(azimuth_deg))


def render_file_name(elevation_deg: int, azimuth_index: int) -> str:
    """Return the dataset's file name for a view.

    `XXX` is the azimuth index for elevation 20 and 32 plus the index for 30,
    as in the original renders. The layout numbers no other elevation, so any
    other elevation raises `RecipeError`.
    """
    if elevation_deg not in ELEVATIONS_DEG:
        raise RecipeError(f"elevation {elevation_deg} has no file number in the dataset layout; use one of {ELEVATIONS_DEG}")
    if not 0 <= azimuth_index < len(AZIMUTHS_DEG):
        raise RecipeError(f"azimuth index {azimuth_index} is outside 0..{len(AZIMUTHS_DEG) - 1}")
    number = azimuth_index + 32 * ELEVATIONS_DEG.index(elevation_deg)
    return f"image_{number:03d}_p{elevation_deg:03d}_t{AZIMUTHS_DEG[azimuth_index]:03d}_r096.png"


def list_chair_folders(root: str | os.PathLike) -> list[str]:
    """Return the sorted names of the chair folders in a `rendered_chairs` root.

    Files beside the folders (such as `all_chair_names.mat` in the original
    dataset) and hidden entries (names starting with ".") are skipped. The
    position of a name in this list is the chair's id. Raises `DataError` for
    a missing root or a root that is not a folder.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: chair renders folder not found; expected a folder laid out as {_FOLDER_HINT}")
    if not root.is_dir():
        raise DataError(f"{root}: is a file, expected a folder laid out as {_FOLDER_HINT} or a TFRecord file")
    with os.scandir(root) as entries:
        return sorted(entry.name for entry in entries if entry.is_dir() and not entry.name.startswith("."))


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def _png_header_size(data: bytes, origin: str) -> tuple[int, int]:
    """Return (width, height) from the IHDR chunk, which a valid PNG has first."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise DataError(f"{origin}: corrupt PNG: no IHDR header chunk after the signature; replace the file")
    return struct.unpack(">II", data[16:24])


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite uint8 RGBA `[H, W, 4]` on white, rounding to the nearest uint8 `[H, W, 3]`."""
    color = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:].astype(np.uint32)
    # out = color * a / 255 + 255 * (1 - a / 255), rounded half up, in integers.
    mixed = (color * alpha + 255 * (255 - alpha) + 127) // 255
    return mixed.astype(np.uint8)


def _image_to_rgb_on_white(image: Image.Image, origin: str) -> np.ndarray:
    mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        return _composite_on_white(np.asarray(image.convert("RGBA")))
    if mode in ("1", "L", "P", "RGB"):
        return np.asarray(image.convert("RGB"))
    if mode.startswith("I"):
        # 16-bit greyscale PNGs load as mode I or I;16. Pillow's convert("RGB")
        # clips them at 255 instead of scaling, so scale 0..65535 to 0..255 here.
        # NOTE: a tRNS transparency in a 16-bit greyscale PNG is handled by the
        # branch above through Pillow's RGBA conversion, which clips the same way.
        grey = np.rint(np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    raise DataError(f"{origin}: unsupported PNG mode {mode}; expected L, LA, P, RGB or RGBA")


def decode_png_rgb(data: bytes, origin: str = "<PNG bytes>") -> np.ndarray:
    """Decode PNG file bytes to RGB, compositing any transparency on white.

    Accepts Pillow modes 1, L, LA, P (with or without a transparency chunk),
    RGB (also with tRNS), RGBA and 16-bit greyscale. The header is checked
    before decoding: a PNG that claims more than `MAX_SOURCE_PIXELS` pixels is
    rejected unread. `origin` names the file or record in error messages.

    Returns:
        uint8 array, shape `[H, W, 3]`, in the source resolution.

    Raises:
        DataError: for data that is not a PNG, is truncated or corrupt, or is
            too large.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise DataError(f"{origin}: not a PNG file (it starts with {bytes(data[:8])!r}); expected PNG image data")
    width, height = _png_header_size(data, origin)
    if width * height > MAX_SOURCE_PIXELS:
        raise DataError(
            f"{origin}: PNG header claims {width}x{height} pixels, more than the limit of "
            f"{MAX_SOURCE_PIXELS} pixels, so it is a decompression bomb or the wrong file; "
            "replace it with the 600x600 render"
        )
    if width == 0 or height == 0:
        raise DataError(f"{origin}: PNG header claims an empty {width}x{height} image; replace the file")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.load()
            return _image_to_rgb_on_white(image, origin)
    except Image.DecompressionBombError as error:
        raise DataError(f"{origin}: rejected as a decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as error:
        raise DataError(f"{origin}: cannot decode the PNG ({error}); the file is truncated or corrupt, so replace it") from None


def resize_square(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """Pad an RGB image to a square with white, then resize it with the BOX filter.

    Args:
        rgb: uint8 array, shape `[H, W, 3]`.
        image_size: output side length in pixels.

    Returns:
        uint8 array, shape `[image_size, image_size, 3]`. An input that is
        already square at that size is returned unchanged.
    """
    height, width = rgb.shape[:2]
    if height != width:
        side = max(height, width)
        padded = np.full((side, side, 3), 255, dtype=np.uint8)
        top = (side - height) // 2
        left = (side - width) // 2
        padded[top : top + height, left : left + width] = rgb
        rgb = padded
    if rgb.shape[0] == image_size:
        return rgb
    resized = Image.fromarray(rgb).resize((image_size, image_size), _RESAMPLE)
    return np.asarray(resized)


def decode_chair_image(data: bytes, image_size: int, origin: str = "<PNG bytes>") -> np.ndarray:
    """Decode PNG bytes to a white-background RGB square of `image_size` pixels.

    Returns:
        uint8 array, shape `[image_size, image_size, 3]`.
    """
    return resize_square(decode_png_rgb(data, origin), image_size)


def _validate_image_size(image_size: object) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise RecipeError(f"image_size must be an integer number of pixels, got {image_size!r}")
    if not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise RecipeError(f"image_size must be from 1 to {MAX_IMAGE_SIZE} pixels, got {image_size}")
    return int(image_size)


# ---------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _View:
    """One image of the source: its labels and where its PNG bytes are.

    `location` is the PNG path for the folder layout and the record's byte
    offset for a TFRecord file. `size` and `mtime_ns` (0 for records) go into
    the cache key.
    """

    chair: str
    chair_id: int
    elevation_deg: int
    azimuth_index: int
    location: str | int
    size: int
    mtime_ns: int

    @property
    def sort_key(self) -> tuple[int, int, int]:
        return (self.chair_id, self.elevation_deg, self.azimuth_index)


def _scan_renders(root: Path, chair: str, chair_id: int) -> list[_View]:
    folder = root / chair
    renders = folder / "renders"
    if not renders.is_dir():
        hint = ""
        if any(child.is_dir() and (child / "renders").is_dir() for child in folder.iterdir()):
            hint = f"; {folder} looks like a rendered_chairs root itself, so pass it as the root"
        raise DataError(f"{folder}: chair folder has no renders/ subfolder; expected {_FOLDER_HINT}{hint}")
    views: list[_View] = []
    seen: dict[tuple[int, int], str] = {}
    with os.scandir(renders) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if not entry.is_file():
                raise DataError(f"{entry.path}: is not a file; a renders folder contains only {RENDER_NAME_PATTERN} images")
            view = parse_render_name(entry.name, renders)
            key = (view.elevation_deg, view.azimuth_index)
            if key in seen:
                raise DataError(
                    f"{entry.path}: shows the same view (p{view.elevation_deg:03d}, t{view.azimuth_deg:03d}) "
                    f"as {seen[key]}; keep one of the two files"
                )
            seen[key] = entry.name
            stat = entry.stat()
            views.append(_View(chair, chair_id, view.elevation_deg, view.azimuth_index, entry.path, stat.st_size, stat.st_mtime_ns))
    if not views:
        raise DataError(f"{renders}: contains no images; expected files named {RENDER_NAME_PATTERN}")
    return views


def _single_int(features: dict, name: str, where: str) -> int:
    value = features[name]
    if not isinstance(value, np.ndarray) or value.dtype != np.int64 or value.size != 1:
        raise DataError(f"{where}: feature {name!r} must hold one int64 value, got {value!r}")
    return int(value[0])


def _parse_tfrecord_features(features: dict, where: str) -> tuple[int, int, int]:
    """Return (chair_id, elevation_deg, azimuth_index) of one record, checking every field."""
    missing = [name for name in _TFRECORD_FEATURES if name not in features]
    if missing:
        raise DataError(
            f"{where}: missing feature(s) {', '.join(missing)}; a chair record has "
            f"img (PNG bytes), id, rot and ele (int64); found {', '.join(sorted(features)) or 'none'}"
        )
    image = features["img"]
    if not isinstance(image, list) or len(image) != 1:
        raise DataError(f"{where}: feature 'img' must hold one byte string (the PNG file), got {type(image).__name__}")
    chair_id = _single_int(features, "id", where)
    rot = _single_int(features, "rot", where)
    ele = _single_int(features, "ele", where)
    if chair_id < 0:
        raise DataError(f"{where}: chair id {chair_id} is negative; ids are positions in the sorted folder names")
    if not 0 <= rot < len(AZIMUTHS_DEG):
        raise DataError(f"{where}: rot {rot} is outside 0..{len(AZIMUTHS_DEG) - 1} (the azimuth index)")
    if not 0 <= ele < len(ELEVATIONS_DEG):
        raise DataError(f"{where}: ele {ele} is invalid; expected 0 (20 degrees) or 1 (30 degrees)")
    return chair_id, ELEVATIONS_DEG[ele], rot


def _scan_tfrecord(path: Path) -> list[tuple[int, int, int, int, int]]:
    """Return (offset, length, chair_id, elevation_deg, azimuth_index) for every record."""
    if tfrecord.is_gzip_file(path):
        raise DataError(
            f"{path}: is gzip-compressed, and reading single images needs random access; "
            f"decompress it first (gunzip -c {path.name} > {path.stem}-plain{path.suffix}) and pass the new file"
        )
    rows = []
    records = tfrecord.iter_records(path)
    try:
        first = next(records, None)
    except DataError as error:
        # A first record that fails its checks usually means another kind of file.
        raise DataError(f"{error}. If {path.name} is not a TFRecord file, pass a folder laid out as {_FOLDER_HINT} instead") from None
    if first is None:
        return rows
    progress = tqdm(itertools.chain([first], records), desc=f"Indexing {path.name}", unit="record", disable=None, leave=False)
    for offset, data in progress:
        where = f"{path}: record at byte {offset}"
        chair_id, elevation_deg, azimuth_index = _parse_tfrecord_features(tfrecord.decode_example(data, where), where)
        rows.append((offset, len(data), chair_id, elevation_deg, azimuth_index))
    return rows


def _read_png_bytes(source: Path, layout: str, view: _View) -> tuple[bytes, str]:
    """Return the PNG bytes of a view and a description of where they came from."""
    if layout == "folder":
        try:
            return Path(view.location).read_bytes(), str(view.location)
        except OSError as error:
            raise DataError(f"{view.location}: cannot read the image: {error.strerror or error}; check that the file exists and is readable") from None
    where = f"{source}: record at byte {view.location}"
    features = tfrecord.decode_example(tfrecord.read_record_at(source, view.location), where)
    _parse_tfrecord_features(features, where)
    return features["img"][0], where


# ---------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Return the folder of the resized-image cache.

    It is `$CONDGEN_CACHE_DIR/chairs`, or `~/.cache/condgen/chairs` when the
    variable is unset or empty.
    """
    base = os.environ.get(_CACHE_ENV) or os.path.join("~", ".cache", "condgen")
    return Path(base).expanduser() / "chairs"


def clear_cache(cache_dir: str | os.PathLike | None = None) -> int:
    """Delete every cached chair image array and index, and return the number of files deleted.

    `cache_dir` defaults to `default_cache_dir()`. Only files that this module
    writes (`*.npy`, `*.json` and leftover `*.tmp`) are deleted.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not folder.is_dir():
        return 0
    n_deleted = 0
    for path in folder.iterdir():
        if path.is_file() and path.suffix in (".npy", ".json", ".tmp"):
            path.unlink(missing_ok=True)
            n_deleted += 1
    logger.info("Deleted %d chair cache files from %s", n_deleted, folder)
    return n_deleted


def _cache_key(payload: dict) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _write_json_atomically(path: Path, payload: object) -> None:
    temp_path = _temporary_sibling(path)
    try:
        temp_path.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def _usable_cache_dir(cache_dir: Path) -> Path | None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        logger.warning("Cannot create the chair image cache folder %s (%s); reading without a cache", cache_dir, error)
        return None
    if not os.access(cache_dir, os.W_OK):
        logger.warning("Chair image cache folder %s is not writable; reading without a cache", cache_dir)
        return None
    return cache_dir


def _open_cached_array(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """Return the memory-mapped cache array, or None when it is missing or has another shape."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        logger.warning("Ignoring the unreadable chair image cache %s (%s); building it again", path, error)
        return None
    if array.shape != shape or array.dtype != np.uint8:
        logger.warning("Ignoring the chair image cache %s: it contains %s %s, expected uint8 %s", path, array.dtype, array.shape, shape)
        return None
    return array


def _build_cached_array(path: Path, n_images: int, image_size: int, decode_one) -> None:
    """Decode `n_images` images with `decode_one(i)` into a new `.npy` file, written atomically."""
    temp_path = _temporary_sibling(path)
    try:
        array = np.lib.format.open_memmap(temp_path, mode="w+", dtype=np.uint8, shape=(n_images, image_size, image_size, 3))
        with ThreadPoolExecutor(max_workers=_CACHE_THREADS) as executor:
            progress = tqdm(total=n_images, desc="Caching chair images", unit="image", disable=None)
            try:
                for i, image in enumerate(executor.map(decode_one, range(n_images))):
                    array[i] = image
                    progress.update(1)
            finally:
                progress.close()
                executor.shutdown(cancel_futures=True)
        array.flush()
        del array
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------


def _resolve_chairs(requested: object, chair_names: Sequence[str], option_name: str) -> set[int]:
    """Turn chair names or ids into a set of ids, raising `LabelError` for unknown ones."""
    if isinstance(requested, (str, int, np.integer)):
        requested = [requested]
    if not isinstance(requested, Iterable):
        raise RecipeError(f"{option_name} must be a list of chair names or ids, got {requested!r}")
    index = {name: i for i, name in enumerate(chair_names)}
    ids: set[int] = set()
    for value in requested:
        if isinstance(value, bool):
            raise LabelError(f"{option_name}: {value!r} is not a chair name or id")
        if isinstance(value, (int, np.integer)):
            if not 0 <= value < len(chair_names):
                raise LabelError(f"{option_name}: chair id {value} is outside the valid range 0..{len(chair_names) - 1}")
            ids.add(int(value))
        elif isinstance(value, str):
            if value not in index:
                close = difflib.get_close_matches(value, chair_names, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else f"; {len(chair_names)} chairs exist, e.g. {', '.join(chair_names[:3])}"
                raise LabelError(f"{option_name}: chair {value!r} not found{hint}")
            ids.add(index[value])
        else:
            raise LabelError(f"{option_name}: {value!r} is not a chair name (str) or id (int)")
    return ids


class ChairViews(Dataset):
    """Chair renders with their labels, from a `rendered_chairs` folder or a TFRecord file.

    Each item is a dict:

    - `image`: float32 tensor, shape `[3, image_size, image_size]`, in [0, 1],
      on a white background.
    - `chair`: the chair's name (its folder name), str.
    - `chair_id`: position of the name in `chair_names`, int.
    - `azimuth_deg`, `elevation_deg`: the camera's view in degrees, float.

    Items are ordered by chair id, elevation and azimuth, whatever the order of
    the files or records. Both layouts give identical items for the same
    renders when a TFRecord is read with `names=list_chair_folders(root)`.

    Args:
        source: a `rendered_chairs` root folder or an uncompressed TFRecord file.
        image_size: side length of the output images in pixels.
        chairs: chair names or ids to keep; None keeps all.
        names: for a TFRecord only, the chair folder names, which are sorted
            and indexed by the records' `id`. Without it a chair's name is its
            id as a string.
        cache: keep the resized images in a memory-mapped `.npy` file under
            `cache_dir`, built with a progress bar on first use. False decodes
            every image on every read and writes nothing.
        cache_dir: folder of the cache; defaults to `default_cache_dir()`.

    Attributes:
        chair_names: the sorted vocabulary; `chair_names[item["chair_id"]]`
            is `item["chair"]`. It lists every chair of the source, also those
            that `chairs` filtered out.
        metadata: one dict per item with the labels and `azimuth_index` (0-30)
            but without the image.

    Raises:
        DataError: for a missing source, a file or folder outside the layout,
            or no images left after filtering. Images are checked while the
            cache is built, or on reading with `cache=False`.
        LabelError: for unknown chair names or ids in `chairs`.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        image_size: int = 64,
        chairs: Iterable[str | int] | None = None,
        names: Sequence[str] | None = None,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
    ):
        self.image_size = _validate_image_size(image_size)
        if chairs is not None and not isinstance(chairs, (str, int, np.integer)):
            chairs = list(chairs)
        self.source = Path(source).expanduser().resolve()
        if not self.source.exists():
            raise DataError(f"{source}: chair data not found; pass a folder laid out as {_FOLDER_HINT} or a TFRecord file")
        resolved_cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self._cache_dir = _usable_cache_dir(resolved_cache_dir) if cache else None

        if self.source.is_dir():
            if names is not None:
                raise RecipeError(f"names= applies to TFRecord input only; {source} is a folder, whose folder names are the chair names")
            self.layout = "folder"
            self.chair_names = list_chair_folders(self.source)
            if not self.chair_names:
                raise DataError(f"{self.source}: contains no chair folders; expected {_FOLDER_HINT}")
            selected = self._select_chairs(chairs)
            views = [view for chair_id in sorted(selected) for view in _scan_renders(self.source, self.chair_names[chair_id], chair_id)]
        else:
            self.layout = "tfrecord"
            views = self._read_tfrecord_views(names, chairs)

        if not views:
            raise DataError(f"{self.source}: no images left after selecting chairs {chairs!r}; pick names from list_chair_folders() or ids below {len(self.chair_names)}")
        views.sort(key=lambda view: view.sort_key)
        self._views: list[_View] = views
        self._rows: list[int] = list(range(len(views)))
        self._cache_path: Path | None = None
        self._cache_array: np.ndarray | None = None
        if self._cache_dir is not None:
            self._cache_path = self._prepare_cache()

    # -- construction helpers ------------------------------------------------

    def _select_chairs(self, chairs: Iterable[str | int] | None) -> set[int]:
        if chairs is None:
            return set(range(len(self.chair_names)))
        return _resolve_chairs(chairs, self.chair_names, "chairs")

    def _tfrecord_index(self) -> list[tuple[int, int, int, int, int]]:
        """Return the record index, reusing the one stored in the cache folder when the file is unchanged."""
        stat = self.source.stat()
        index_path = None
        if self._cache_dir is not None:
            key = _cache_key({"version": _CACHE_FORMAT_VERSION, "tfrecord": str(self.source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
            index_path = self._cache_dir / f"tfrecord-index-{key}.json"
            try:
                rows = [tuple(row) for row in json.loads(index_path.read_text(encoding="utf-8"))]
                if all(len(row) == 5 and all(isinstance(x, int) for x in row) for row in rows):
                    return rows
            except (OSError, ValueError, TypeError):
                pass  # no stored index yet, or an unreadable one: scan the file again
        rows = _scan_tfrecord(self.source)
        if index_path is not None:
            _write_json_atomically(index_path, rows)
        return rows

    def _read_tfrecord_views(self, names: Sequence[str] | None, chairs: Iterable[str | int] | None) -> list[_View]:
        rows = self._tfrecord_index()
        if not rows:
            raise DataError(f"{self.source}: TFRecord file has no records; expected one record per chair image, so copy or write the file again")
        max_id = max(row[2] for row in rows)
        if names is None:
            self.chair_names = [str(i) for i in range(max_id + 1)]
        else:
            if isinstance(names, (str, bytes)) or not all(isinstance(name, str) for name in names):
                raise RecipeError("names must be a list of chair folder names (str), such as list_chair_folders(root)")
            self.chair_names = sorted(names)
            if len(set(self.chair_names)) != len(self.chair_names):
                raise RecipeError("names lists a chair more than once; pass each folder name once")
            if max_id >= len(self.chair_names):
                offset = next(row[0] for row in rows if row[2] == max_id)
                raise DataError(
                    f"{self.source}: record at byte {offset} has chair id {max_id}, but names lists only "
                    f"{len(self.chair_names)} chairs; pass all folder names of the rendered_chairs root the file was made from"
                )
        selected = self._select_chairs(chairs)
        views = []
        seen: dict[tuple[int, int, int], int] = {}
        for offset, length, chair_id, elevation_deg, azimuth_index in rows:
            key = (chair_id, elevation_deg, azimuth_index)
            if key in seen:
                raise DataError(
                    f"{self.source}: record at byte {offset} repeats the view of the record at byte {seen[key]} "
                    f"(id {chair_id}, elevation {elevation_deg}, azimuth index {azimuth_index}); write each view once"
                )
            seen[key] = offset
            if chair_id in selected:
                views.append(_View(self.chair_names[chair_id], chair_id, elevation_deg, azimuth_index, offset, length, 0))
        return views

    def _prepare_cache(self) -> Path:
        """Open the cache file for these views, building it first when it does not exist."""
        stat = self.source.stat()
        payload = {
            "version": _CACHE_FORMAT_VERSION,
            "layout": self.layout,
            "source": str(self.source),
            # Record offsets do not change when a record's bytes do, so a TFRecord
            # is identified by its size and modification time as a whole.
            "source_size": stat.st_size if self.layout == "tfrecord" else 0,
            "source_mtime_ns": stat.st_mtime_ns if self.layout == "tfrecord" else 0,
            "image_size": self.image_size,
            "resize": RESIZE_METHOD,
            "views": [[str(view.location), view.size, view.mtime_ns] for view in self._views],
        }
        path = self._cache_dir / f"{self.layout}-{self.image_size}px-{_cache_key(payload)}.npy"
        shape = (len(self._views), self.image_size, self.image_size, 3)
        if _open_cached_array(path, shape) is not None:
            logger.debug("Reading cached chair images from %s", path)
            return path
        logger.info(
            "Caching %d chair images at %dx%d pixels in %s; to free the space, call "
            "condgen.vision.chairs.clear_cache() or delete that folder",
            len(self._views), self.image_size, self.image_size, path,
        )
        _build_cached_array(path, len(self._views), self.image_size, self._decode_view)
        _write_json_atomically(
            path.with_suffix(".json"),
            {"source": str(self.source), "layout": self.layout, "image_size": self.image_size, "resize": RESIZE_METHOD, "n_images": len(self._views)},
        )
        return path

    def _decode_view(self, position: int) -> np.ndarray:
        data, origin = _read_png_bytes(self.source, self.layout, self._views[position])
        return decode_chair_image(data, self.image_size, origin)

    # -- Dataset protocol ----------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict:
        position = self._rows[index]
        view = self._views[position]
        if self._cache_path is not None:
            if self._cache_array is None:
                # Opened lazily, so that each DataLoader worker maps the file itself.
                self._cache_array = np.load(self._cache_path, mmap_mode="r")
            pixels = np.array(self._cache_array[position])
        else:
            pixels = self._decode_view(position)
        image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float().div_(255.0)  # [3, H, W]
        return {
            "image": image,
            "chair": view.chair,
            "chair_id": view.chair_id,
            "azimuth_deg": float(AZIMUTHS_DEG[view.azimuth_index]),
            "elevation_deg": float(view.elevation_deg),
        }

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache_array"] = None  # a memory map does not pickle; each process opens its own
        return state

    def __repr__(self) -> str:
        return f"ChairViews({str(self.source)!r}, layout={self.layout}, n_items={len(self)}, n_chairs={len(self.chairs_present)}, image_size={self.image_size})"

    # -- labels and subsets --------------------------------------------------

    @property
    def metadata(self) -> list[dict]:
        """One label dict per item, in item order, without the image."""
        rows = []
        for position in self._rows:
            view = self._views[position]
            rows.append(
                {
                    "chair": view.chair,
                    "chair_id": view.chair_id,
                    "azimuth_deg": float(AZIMUTHS_DEG[view.azimuth_index]),
                    "elevation_deg": float(view.elevation_deg),
                    "azimuth_index": view.azimuth_index,
                }
            )
        return rows

    @property
    def chairs_present(self) -> list[str]:
        """Sorted names of the chairs that have at least one item in this dataset."""
        return sorted({self._views[position].chair for position in self._rows})

    @property
    def cache_path(self) -> Path | None:
        """The `.npy` file that contains this dataset's resized images, or None without a cache."""
        return self._cache_path

    def subset(self, indices: Iterable[int]) -> "ChairViews":
        """Return a dataset of the items at `indices`, sharing this one's source and cache."""
        rows = [self._rows[i] for i in indices]
        if not rows:
            raise DataError(f"{self.source}: the requested subset of {len(self)} chair images is empty")
        child = copy.copy(self)
        child._rows = rows
        child._cache_array = None
        return child


def split_held_out_views(
    dataset: ChairViews,
    every: int = 4,
    offset: int = 0,
    chairs: Iterable[str | int] | None = None,
) -> tuple[ChairViews, ChairViews]:
    """Hold out every `every`-th azimuth of some chairs, for testing generation of unseen views.

    An item is held out when its chair is in `chairs` (all chairs when None)
    and its azimuth index k (0-30) has `k % every == offset`, at both
    elevations. `every=1` holds out all views of the listed chairs.

    Returns:
        `(train, held_out)`, two disjoint `ChairViews` that share the cache.

    Raises:
        RecipeError: for `every` outside 1..31 or `offset` outside 0..every-1.
        LabelError: for a chair that is not in `dataset`.
        DataError: when either side would be empty.
    """
    for name, value in (("every", every), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise RecipeError(f"held-out views: {name} must be an integer, got {value!r}")
    if not 1 <= every <= len(AZIMUTHS_DEG):
        raise RecipeError(f"held-out views: every must be from 1 to {len(AZIMUTHS_DEG)} (the number of azimuths), got {every}")
    if not 0 <= offset < every:
        raise RecipeError(f"held-out views: offset must be from 0 to every - 1 = {every - 1}, got {offset}")

    metadata = dataset.metadata
    present_ids = {row["chair_id"] for row in metadata}
    if chairs is None:
        target_ids = present_ids
    else:
        target_ids = _resolve_chairs(chairs, dataset.chair_names, "held-out chairs")
        absent = sorted(dataset.chair_names[i] for i in target_ids - present_ids)
        if absent:
            raise LabelError(f"held-out chairs: {', '.join(absent)} not in this dataset, which has {len(present_ids)} chairs; pick chairs from dataset.chairs_present")

    train_indices, held_out_indices = [], []
    for i, row in enumerate(metadata):
        if row["chair_id"] in target_ids and row["azimuth_index"] % every == offset:
            held_out_indices.append(i)
        else:
            train_indices.append(i)
    if not train_indices:
        raise DataError(f"held-out views: every={every}, offset={offset} selects all {len(metadata)} images as held-out, leaving none for training")
    if not held_out_indices:
        raise DataError(f"held-out views: every={every}, offset={offset} selects no held-out images; the dataset has no azimuth index k with k % {every} == {offset}")
    return dataset.subset(train_indices), dataset.subset(held_out_indices)
