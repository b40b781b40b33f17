"""Tests of the chair readers: both layouts, PNG modes, bad input, the cache and the held-out split."""

from __future__ import annotations

import gzip
import io
import logging
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from condgen import tfrecord
from condgen.errors import DataError, LabelError, RecipeError
from condgen.vision import chairs
from condgen.vision.chairs import (
    AZIMUTHS_DEG,
    ChairViews,
    clear_cache,
    decode_png_rgb,
    list_chair_folders,
    parse_render_name,
    render_file_name,
    resize_square,
    split_held_out_views,
)

SMALL = 8  # side of the hand-made test PNGs in pixels


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """Keep every cache of these tests under tmp_path."""
    cache_root = tmp_path / "cache-home"
    monkeypatch.setenv("CONDGEN_CACHE_DIR", str(cache_root))
    return cache_root / "chairs"


def view_color(chair_index: int, elevation_deg: int, azimuth_index: int) -> tuple[int, int, int]:
    """A colour that encodes the labels, so an image shows which view it is."""
    return (10 + 20 * chair_index, 4 + 8 * azimuth_index, 100 if elevation_deg == 20 else 200)


def write_png(path: Path, color: tuple[int, int, int], size: int = SMALL) -> None:
    Image.fromarray(np.full((size, size, 3), color, dtype=np.uint8)).save(path)


def write_root(root: Path, names: list[str], azimuth_indices=range(31), scramble_numbers: bool = False) -> Path:
    """Write a rendered_chairs root of solid-colour PNGs, one colour per (chair, view)."""
    for chair_index, name in enumerate(sorted(names)):
        renders = root / name / "renders"
        renders.mkdir(parents=True)
        for elevation in (20, 30):
            for k in azimuth_indices:
                file_name = render_file_name(elevation, k)
                if scramble_numbers:
                    # A running number unrelated to the view: the reader must ignore it.
                    file_name = f"image_{(97 * k + elevation) % 1000:03d}" + file_name[len("image_000") :]
                write_png(renders / file_name, view_color(chair_index, elevation, k))
    return root


def write_tfrecord_from_root(root: Path, path: Path) -> Path:
    """Write the TFRecord layout of a rendered_chairs root, records in reverse order."""
    examples = []
    for chair_id, name in enumerate(list_chair_folders(root)):
        for png in sorted((root / name / "renders").iterdir()):
            view = parse_render_name(png.name)
            examples.append(
                {
                    "img": png.read_bytes(),
                    "id": chair_id,
                    "rot": view.azimuth_index,
                    "ele": (20, 30).index(view.elevation_deg),
                }
            )
    tfrecord.write_tfrecord(path, reversed(examples))
    return path


def labels(item: dict) -> tuple:
    return (item["chair"], item["chair_id"], item["azimuth_deg"], item["elevation_deg"])


def png_with_header_size(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, followed by a tiny IDAT and IEND."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------


def test_real_readers_give_identical_items(chairs_dir):
    root = chairs_dir / "rendered_chairs"
    names = list_chair_folders(root)
    from_folder = ChairViews(root, image_size=64, chairs=names[:6])
    from_tfrecord = ChairViews(chairs_dir / "chairs.tfr", image_size=64, names=names)

    assert len(from_folder) == 6 * 62
    assert len(from_tfrecord) == 6 * 62
    assert from_folder.metadata == from_tfrecord.metadata
    assert from_tfrecord.chairs_present == names[:6]
    for i in range(len(from_folder)):
        a, b = from_folder[i], from_tfrecord[i]
        assert labels(a) == labels(b), i
        assert torch.equal(a["image"], b["image"]), f"item {i} ({labels(a)}) differs between the readers"


def test_real_views_and_image_content(chairs_dir):
    root = chairs_dir / "rendered_chairs"
    names = list_chair_folders(root)
    dataset = ChairViews(root, image_size=64, chairs=[names[0]], cache=False)

    views = {(row["elevation_deg"], row["azimuth_deg"]) for row in dataset.metadata}
    assert views == {(float(e), float(a)) for e in (20, 30) for a in AZIMUTHS_DEG}
    assert dataset.chair_names == names

    # Oracle: the source PNG decoded by Pillow alone, then averaged down by area.
    item = dataset[0]
    assert (item["elevation_deg"], item["azimuth_deg"]) == (20.0, 0.0)
    source = np.asarray(Image.open(root / names[0] / "renders" / "image_000_p020_t000_r096.png").convert("RGB"), dtype=np.float64)
    image = item["image"].numpy()
    assert image.shape == (3, 64, 64)
    assert image.dtype == np.float32
    # An area average keeps the mean level; 1/255 covers the uint8 rounding.
    assert abs(image.mean() - source.mean() / 255) < 1 / 255
    assert image[:, 0, 0].tolist() == [1.0, 1.0, 1.0], "background must stay white"
    assert image.min() < 0.6, "the chair must be darker than the white background"


def test_real_tfrecord_names_default_to_ids(chairs_dir):
    dataset = ChairViews(chairs_dir / "chairs.tfr", image_size=16, cache=False)
    assert dataset.chair_names == ["0", "1", "2", "3", "4", "5"]
    assert dataset[0]["chair"] == "0"
    assert dataset[len(dataset) - 1]["chair"] == "5"
    assert dataset[len(dataset) - 1]["chair_id"] == 5


# ---------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------


def test_folder_view_from_p_and_t(tmp_path):
    root = write_root(tmp_path / "root", ["chair_b", "chair_a"], scramble_numbers=True)
    dataset = ChairViews(root, image_size=SMALL, cache=False)
    assert len(dataset) == 2 * 62
    for i in range(len(dataset)):
        item = dataset[i]
        k = AZIMUTHS_DEG.index(int(item["azimuth_deg"]))
        expected = np.array(view_color(item["chair_id"], int(item["elevation_deg"]), k)) / 255
        assert np.allclose(item["image"][:, 0, 0].numpy(), expected), labels(item)


def test_folder_names_any_length_and_files_skipped(tmp_path):
    names = ["1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c", "0" * 32, "z"]  # 30, 32 and 1 characters
    root = write_root(tmp_path / "root", names, azimuth_indices=[0, 3])
    (root / "all_chair_names.mat").write_bytes(b"MATLAB 5.0")
    dataset = ChairViews(root, image_size=SMALL, cache=False)

    assert dataset.chair_names == sorted(names)
    assert [dataset[i]["chair"] for i in range(0, len(dataset), 4)] == sorted(names)
    assert [dataset[i]["chair_id"] for i in range(0, len(dataset), 4)] == [0, 1, 2]


def test_chair_filter_by_name_and_id(tmp_path):
    root = write_root(tmp_path / "root", ["a", "b", "c"], azimuth_indices=[0, 1])
    by_name = ChairViews(root, image_size=SMALL, chairs=["c", "a"], cache=False)
    by_id = ChairViews(root, image_size=SMALL, chairs=[2, 0], cache=False)
    assert by_name.chairs_present == ["a", "c"]
    assert by_name.metadata == by_id.metadata
    # Ids stay positions in the full sorted vocabulary.
    assert sorted({row["chair_id"] for row in by_name.metadata}) == [0, 2]


def test_synthetic_tfrecord_matches_folder(tmp_path):
    root = write_root(tmp_path / "root", ["a", "b"], azimuth_indices=[0, 7, 30])
    record_path = write_tfrecord_from_root(root, tmp_path / "chairs.tfr")
    from_folder = ChairViews(root, image_size=4)
    from_tfrecord = ChairViews(record_path, image_size=4, names=list_chair_folders(root))
    assert from_folder.metadata == from_tfrecord.metadata
    for i in range(len(from_folder)):
        assert labels(from_folder[i]) == labels(from_tfrecord[i])
        assert torch.equal(from_folder[i]["image"], from_tfrecord[i]["image"])


def test_render_file_name_numbering():
    assert render_file_name(20, 0) == "image_000_p020_t000_r096.png"
    assert render_file_name(20, 30) == "image_030_p020_t348_r096.png"
    assert render_file_name(30, 0) == "image_032_p030_t000_r096.png"
    assert render_file_name(30, 30) == "image_062_p030_t348_r096.png"
    assert parse_render_name("image_045_p030_t150_r096.png") == (30, 150, 13)


# ---------------------------------------------------------------------------
# PNG modes
# ---------------------------------------------------------------------------


@pytest.fixture
def known_image():
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, size=(6, 6), dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    return rgb, alpha


def composite_expected(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """color * a + white * (1 - a), in float64, rounded to the nearest integer."""
    a = alpha.astype(np.float64)[..., None] / 255
    return np.floor(color.astype(np.float64) * a + 255 * (1 - a) + 0.5).astype(np.uint8)


def save_and_check_mode(image: Image.Image, path: Path, mode: str, **options) -> bytes:
    image.save(path, **options)
    with Image.open(path) as reopened:
        assert reopened.mode == mode, "the test image was not written in the intended mode"
    return path.read_bytes()


def test_png_mode_l(tmp_path, known_image):
    rgb, _ = known_image
    grey = rgb[..., 0]
    data = save_and_check_mode(Image.fromarray(grey), tmp_path / "l.png", "L")
    assert np.array_equal(decode_png_rgb(data), np.repeat(grey[..., None], 3, axis=2))


def test_png_mode_rgb(tmp_path, known_image):
    rgb, _ = known_image
    data = save_and_check_mode(Image.fromarray(rgb), tmp_path / "rgb.png", "RGB")
    assert np.array_equal(decode_png_rgb(data), rgb)


def test_png_mode_rgba(tmp_path, known_image):
    rgb, alpha = known_image
    rgba = np.dstack([rgb, alpha])
    data = save_and_check_mode(Image.fromarray(rgba), tmp_path / "rgba.png", "RGBA")
    decoded = decode_png_rgb(data)
    assert np.array_equal(decoded, composite_expected(rgb, alpha))
    assert decoded[0, 0].tolist() == [255, 255, 255]
    assert decoded[0, 1].tolist() == rgb[0, 1].tolist()


def test_png_mode_la(tmp_path, known_image):
    rgb, alpha = known_image
    grey = rgb[..., 1]
    data = save_and_check_mode(Image.fromarray(np.dstack([grey, alpha])), tmp_path / "la.png", "LA")
    expected = composite_expected(np.repeat(grey[..., None], 3, axis=2), alpha)
    assert np.array_equal(decode_png_rgb(data), expected)


def palette_image(rgb: np.ndarray) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """A P-mode image with 6 palette entries; returns (image, indices, palette)."""
    palette = rgb.reshape(-1, 3)[:6].copy()
    indices = (np.arange(36).reshape(6, 6) * 5) % 6
    image = Image.fromarray(indices.astype(np.uint8))
    image.putpalette(palette.reshape(-1).tolist())
    return image, indices, palette


def test_png_mode_p(tmp_path, known_image):
    image, indices, palette = palette_image(known_image[0])
    data = save_and_check_mode(image, tmp_path / "p.png", "P")
    assert np.array_equal(decode_png_rgb(data), palette[indices])


def test_png_mode_p_transparent_index(tmp_path, known_image):
    image, indices, palette = palette_image(known_image[0])
    data = save_and_check_mode(image, tmp_path / "p_index.png", "P", transparency=2)
    expected = palette[indices].copy()
    expected[indices == 2] = 255
    assert np.array_equal(decode_png_rgb(data), expected)


def test_png_mode_p_alpha_per_entry(tmp_path, known_image):
    image, indices, palette = palette_image(known_image[0])
    entry_alpha = np.array([255, 0, 128, 64, 200, 255], dtype=np.uint8)
    data = save_and_check_mode(image, tmp_path / "p_alpha.png", "P", transparency=entry_alpha.tobytes())
    expected = composite_expected(palette[indices], entry_alpha[indices])
    assert np.array_equal(decode_png_rgb(data), expected)


def test_png_mode_rgb_color_key(tmp_path, known_image):
    rgb, _ = known_image
    key = tuple(int(v) for v in rgb[2, 3])
    data = save_and_check_mode(Image.fromarray(rgb), tmp_path / "rgb_key.png", "RGB", transparency=key)
    expected = rgb.copy()
    expected[np.all(rgb == key, axis=-1)] = 255
    assert np.array_equal(decode_png_rgb(data), expected)


def test_png_16_bit_grey_scaled(tmp_path):
    values = np.array([[0, 257, 65535], [128 * 257, 1000, 40000]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    expected = np.floor(values / 257 + 0.5).astype(np.uint8)
    assert np.array_equal(decode_png_rgb(path.read_bytes()), np.repeat(expected[..., None], 3, axis=2))


def test_dataset_item_composites_rgba(tmp_path, known_image):
    rgb, alpha = known_image
    renders = tmp_path / "root" / "chair" / "renders"
    renders.mkdir(parents=True)
    Image.fromarray(np.dstack([rgb, alpha])).save(renders / "image_000_p020_t000_r096.png")
    image = ChairViews(tmp_path / "root", image_size=6, cache=False)[0]["image"]
    expected = composite_expected(rgb, alpha).transpose(2, 0, 1) / 255
    assert np.allclose(image.numpy(), expected, atol=1e-6)


# ---------------------------------------------------------------------------
# Resizing
# ---------------------------------------------------------------------------


def test_resize_is_area_average():
    rng = np.random.default_rng(3)
    source = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    resized = resize_square(source, 8)
    block_means = source.reshape(8, 4, 8, 4, 3).astype(np.float64).mean(axis=(1, 3))
    # Pillow's BOX filter works in fixed point, so allow one level of rounding.
    assert np.abs(resized.astype(np.float64) - block_means).max() <= 1.0


def test_resize_pads_non_square_with_white():
    source = np.zeros((4, 8, 3), dtype=np.uint8)
    padded = resize_square(source, 8)
    assert padded.shape == (8, 8, 3)
    assert np.all(padded[:2] == 255)
    assert np.all(padded[6:] == 255)
    assert np.all(padded[2:6] == 0)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def single_image_root(tmp_path: Path, data: bytes, name: str = "image_000_p020_t000_r096.png") -> tuple[Path, Path]:
    renders = tmp_path / "root" / "chair" / "renders"
    renders.mkdir(parents=True)
    (renders / name).write_bytes(data)
    return tmp_path / "root", renders / name


def valid_png_bytes(size: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_truncated_png_raises(tmp_path):
    data = valid_png_bytes()
    root, path = single_image_root(tmp_path, data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as error:
        ChairViews(root, image_size=16, cache=False)[0]
    assert str(path) in str(error.value)
    # With the cache, building it reads every image, so the error comes at once.
    with pytest.raises(DataError, match="truncated or corrupt"):
        ChairViews(root, image_size=16)


def test_non_png_raises(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, format="JPEG")
    root, path = single_image_root(tmp_path, buffer.getvalue())
    with pytest.raises(DataError, match="not a PNG") as error:
        ChairViews(root, image_size=8, cache=False)[0]
    assert str(path) in str(error.value)


def test_bad_file_name_raises(tmp_path):
    root, path = single_image_root(tmp_path, valid_png_bytes(8), name="image_000_p020_t000.png")
    with pytest.raises(DataError, match=r"image_XXX_pPPP_tTTT_r096\.png") as error:
        ChairViews(root, image_size=8, cache=False)
    assert str(path) in str(error.value)


def test_azimuth_outside_dataset_raises(tmp_path):
    root, _ = single_image_root(tmp_path, valid_png_bytes(8), name="image_000_p020_t005_r096.png")
    with pytest.raises(DataError, match="t005 is not one of the dataset's 31 azimuths"):
        ChairViews(root, image_size=8, cache=False)


def test_duplicate_view_raises(tmp_path):
    root, _ = single_image_root(tmp_path, valid_png_bytes(8))
    write_png(root / "chair" / "renders" / "image_099_p020_t000_r096.png", (0, 0, 0))
    with pytest.raises(DataError, match="same view"):
        ChairViews(root, image_size=8, cache=False)


def test_folder_without_renders_raises(tmp_path):
    root = write_root(tmp_path / "root", ["a"], azimuth_indices=[0])
    (root / "b").mkdir()
    with pytest.raises(DataError, match="no renders/ subfolder") as error:
        ChairViews(root, image_size=8, cache=False)
    assert str(root / "b") in str(error.value)


def test_parent_of_root_gets_hint(tmp_path):
    write_root(tmp_path / "data" / "rendered_chairs", ["a"], azimuth_indices=[0])
    with pytest.raises(DataError, match="pass it as the root"):
        ChairViews(tmp_path / "data", image_size=8, cache=False)


def test_missing_root_raises(tmp_path):
    with pytest.raises(DataError, match="not found") as error:
        ChairViews(tmp_path / "nowhere", image_size=8)
    assert "nowhere" in str(error.value)


def test_empty_after_filter_raises(tmp_path):
    root = write_root(tmp_path / "root", ["a"], azimuth_indices=[0])
    with pytest.raises(DataError, match="no images left"):
        ChairViews(root, image_size=8, chairs=[], cache=False)


def test_unknown_chair_raises(tmp_path):
    root = write_root(tmp_path / "root", ["alpha", "beta"], azimuth_indices=[0])
    with pytest.raises(LabelError, match="did you mean alpha"):
        ChairViews(root, image_size=8, chairs=["alpah"], cache=False)
    with pytest.raises(LabelError, match="outside the valid range 0..1"):
        ChairViews(root, image_size=8, chairs=[2], cache=False)


@pytest.mark.parametrize("image_size", [0, -4, 2.5, True, "64", 10_000])
def test_invalid_image_size_raises(tmp_path, image_size):
    root = write_root(tmp_path / "root", ["a"], azimuth_indices=[0])
    with pytest.raises(RecipeError, match="image_size"):
        ChairViews(root, image_size=image_size, cache=False)


def test_decompression_bomb_rejected(tmp_path, monkeypatch):
    root, path = single_image_root(tmp_path, png_with_header_size(20_000, 20_000))
    opened = []
    monkeypatch.setattr(chairs.Image, "open", lambda *args, **kwargs: opened.append(args))
    with pytest.raises(DataError, match="20000x20000 pixels") as error:
        ChairViews(root, image_size=8, cache=False)[0]
    assert str(path) in str(error.value)
    assert opened == [], "the image must be rejected from its header, before Pillow opens it"


def test_tfrecord_missing_feature_raises(tmp_path):
    path = tmp_path / "bad.tfr"
    tfrecord.write_tfrecord(path, [{"img": valid_png_bytes(8), "id": 0, "rot": 0}])
    with pytest.raises(DataError, match=r"record at byte 0: missing feature\(s\) ele"):
        ChairViews(path, image_size=8, cache=False)


def test_tfrecord_bad_rot_raises(tmp_path):
    path = tmp_path / "bad.tfr"
    png = valid_png_bytes(8)
    tfrecord.write_tfrecord(path, [{"img": png, "id": 0, "rot": 0, "ele": 0}, {"img": png, "id": 0, "rot": 31, "ele": 0}])
    with pytest.raises(DataError, match=r"record at byte \d+: rot 31 is outside 0..30"):
        ChairViews(path, image_size=8, cache=False)


def test_tfrecord_names_too_short_raises(tmp_path):
    root = write_root(tmp_path / "root", ["a", "b"], azimuth_indices=[0])
    record_path = write_tfrecord_from_root(root, tmp_path / "chairs.tfr")
    with pytest.raises(DataError, match="chair id 1, but names lists only 1 chairs"):
        ChairViews(record_path, image_size=8, names=["a"], cache=False)


def test_gzip_tfrecord_raises(tmp_path):
    root = write_root(tmp_path / "root", ["a"], azimuth_indices=[0])
    record_path = write_tfrecord_from_root(root, tmp_path / "chairs.tfr")
    zipped = tmp_path / "chairs.tfr.gz"
    zipped.write_bytes(gzip.compress(record_path.read_bytes()))
    with pytest.raises(DataError, match="gzip-compressed"):
        ChairViews(zipped, image_size=8, cache=False)


def test_other_file_as_source_gets_hint(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(valid_png_bytes(8))
    with pytest.raises(DataError, match="is not a TFRecord file, pass a folder"):
        ChairViews(path, image_size=8, cache=False)


# ---------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------


class DecodeCounter:
    def __init__(self, monkeypatch):
        self.calls = 0
        original = chairs.decode_png_rgb

        def counting(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(chairs, "decode_png_rgb", counting)


def test_cache_second_pass_does_not_decode(tmp_path, monkeypatch, caplog, cache_in_tmp):
    root = write_root(tmp_path / "root", ["a", "b"], azimuth_indices=[0, 5, 9])
    counter = DecodeCounter(monkeypatch)

    with caplog.at_level(logging.INFO, logger="condgen.vision.chairs"):
        first = ChairViews(root, image_size=4)
    assert counter.calls == 12
    assert first.cache_path.parent == cache_in_tmp
    assert first.cache_path.is_file()
    assert str(first.cache_path) in caplog.text, "the log must show where the cache is"
    assert "clear_cache()" in caplog.text

    second = ChairViews(root, image_size=4)
    items = [second[i] for i in range(len(second))]
    assert counter.calls == 12, "the second pass decoded images again"
    assert second.cache_path == first.cache_path

    uncached = ChairViews(root, image_size=4, cache=False)
    for i, item in enumerate(items):
        assert torch.equal(item["image"], uncached[i]["image"])
    cached_pixels = np.load(first.cache_path)
    assert cached_pixels.shape == (12, 4, 4, 3)
    assert cached_pixels[0, 0, 0].tolist() == list(view_color(0, 20, 0))


def test_cache_rebuilt_when_source_changes(tmp_path):
    root = write_root(tmp_path / "root", ["a"], azimuth_indices=[0, 1])
    first = ChairViews(root, image_size=4)
    changed = root / "a" / "renders" / render_file_name(20, 0)
    write_png(changed, (1, 2, 3), size=SMALL * 2)
    second = ChairViews(root, image_size=4)
    assert second.cache_path != first.cache_path
    assert second[0]["image"][:, 0, 0].mul(255).round().tolist() == [1.0, 2.0, 3.0]


def test_cache_false_writes_nothing(tmp_path, cache_in_tmp):
    root = write_root(tmp_path / "root", ["a"], azimuth_indices=[0])
    dataset = ChairViews(root, image_size=4, cache=False)
    dataset[0]
    assert dataset.cache_path is None
    assert not cache_in_tmp.exists()


def test_clear_cache_removes_files(tmp_path, cache_in_tmp):
    root = write_root(tmp_path / "root", ["a"], azimuth_indices=[0])
    dataset = ChairViews(root, image_size=4)
    assert dataset.cache_path.is_file()
    assert clear_cache() >= 1
    assert not dataset.cache_path.exists()
    assert list(cache_in_tmp.iterdir()) == []


def test_tfrecord_index_reused(tmp_path, monkeypatch):
    root = write_root(tmp_path / "root", ["a"], azimuth_indices=[0, 1])
    record_path = write_tfrecord_from_root(root, tmp_path / "chairs.tfr")
    ChairViews(record_path, image_size=4)
    scans = []
    monkeypatch.setattr(chairs, "_scan_tfrecord", lambda path: scans.append(path))
    again = ChairViews(record_path, image_size=4)
    assert scans == []
    assert len(again) == 4


# ---------------------------------------------------------------------------
# Held-out views
# ---------------------------------------------------------------------------


def test_held_out_split_of_some_chairs(tmp_path):
    root = write_root(tmp_path / "root", ["a", "b", "c"])
    dataset = ChairViews(root, image_size=4, cache=False)
    train, held_out = split_held_out_views(dataset, every=4, offset=1, chairs=["b"])

    expected_azimuths = {float(AZIMUTHS_DEG[k]) for k in range(1, 31, 4)}
    held_views = {(row["chair"], row["elevation_deg"], row["azimuth_deg"]) for row in held_out.metadata}
    assert held_views == {("b", e, a) for e in (20.0, 30.0) for a in expected_azimuths}
    assert len(held_out) == 2 * 8
    train_views = {(row["chair"], row["elevation_deg"], row["azimuth_deg"]) for row in train.metadata}
    assert not train_views & held_views
    assert len(train) + len(held_out) == len(dataset)
    # Items follow the metadata.
    assert labels(held_out[3]) == labels({**held_out.metadata[3], "image": None})


def test_held_out_split_of_all_chairs(tmp_path):
    root = write_root(tmp_path / "root", ["a", "b"])
    dataset = ChairViews(root, image_size=4, cache=False)
    train, held_out = split_held_out_views(dataset, every=5, offset=0)
    assert {row["azimuth_index"] for row in held_out.metadata} == {0, 5, 10, 15, 20, 25, 30}
    assert {row["azimuth_index"] for row in train.metadata}.isdisjoint({0, 5, 10, 15, 20, 25, 30})
    assert held_out.chairs_present == ["a", "b"]


@pytest.mark.parametrize(
    ("every", "offset", "error"),
    [(0, 0, RecipeError), (32, 0, RecipeError), (4, 4, RecipeError), (4, -1, RecipeError), (2.0, 0, RecipeError), (1, 0, DataError)],
)
def test_held_out_split_rejects_bad_values(tmp_path, every, offset, error):
    root = write_root(tmp_path / "root", ["a"], azimuth_indices=[0, 1, 2])
    dataset = ChairViews(root, image_size=4, cache=False)
    with pytest.raises(error):
        split_held_out_views(dataset, every=every, offset=offset)


def test_held_out_split_rejects_absent_chair(tmp_path):
    root = write_root(tmp_path / "root", ["a", "b"], azimuth_indices=[0, 1])
    dataset = ChairViews(root, image_size=4, chairs=["a"], cache=False)
    with pytest.raises(LabelError, match="b not in this dataset"):
        split_held_out_views(dataset, every=2, chairs=["b"])


# ---------------------------------------------------------------------------
# DataLoader workers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["folder-cached", "tfrecord-uncached"])
def test_dataloader_two_workers_yields_each_item_once(tmp_path, layout):
    root = write_root(tmp_path / "root", ["a", "b"], azimuth_indices=[0, 4, 8, 12])
    if layout == "folder-cached":
        dataset = ChairViews(root, image_size=4)
        dataset[0]  # opens the memory map in this process; pickling must drop it
    else:
        record_path = write_tfrecord_from_root(root, tmp_path / "chairs.tfr")
        dataset = ChairViews(record_path, image_size=4, names=list_chair_folders(root), cache=False)
    pickle.dumps(dataset)

    seen = []
    for batch in DataLoader(dataset, batch_size=3, num_workers=2):
        for j in range(len(batch["chair"])):
            key = (batch["chair"][j], int(batch["chair_id"][j]), float(batch["azimuth_deg"][j]), float(batch["elevation_deg"][j]))
            seen.append(key)
            k = AZIMUTHS_DEG.index(int(key[2]))
            expected = np.array(view_color(key[1], int(key[3]), k)) / 255
            assert np.allclose(batch["image"][j, :, 0, 0].numpy(), expected)
    assert sorted(seen) == sorted(labels(dataset[i]) for i in range(len(dataset)))
    assert len(set(seen)) == len(dataset) == 16
