"""Rendering chairs from a checkpoint: angle parsing, the ChairRenderer API and `condgen render`."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from condgen.cli import main
from condgen.errors import LabelError
from condgen.vision import render
from condgen.vision.render import ChairRenderer, parse_angles, to_pil

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32
TINY_TRAIN = [
    f"data.image_size={IMAGE_SIZE}",
    "conditioning.fused_dim=16",
    "model.fc_dims=[32]",
    "model.base_channels=16",
    "model.min_channels=8",
    "train.steps=3",
    "train.batch_size=4",
    "train.sample_every=3",
    "train.checkpoint_every=3",
    "train.warmup_steps=0",
    "train.num_workers=0",
]


def train_tiny(chairs_dir: Path, run_dir: Path, *overrides: str) -> Path:
    names = sorted(p.name for p in (chairs_dir / "rendered_chairs").iterdir() if p.is_dir())[:3]
    chair_list = "[" + ", ".join(f'"{name}"' for name in names) + "]"
    args = [
        "train",
        str(REPO_ROOT / "recipes" / "chairs_64.toml"),
        f"data.root={chairs_dir / 'rendered_chairs'}",
        f"data.chairs={chair_list}",
        f"run_dir={run_dir}",
        *TINY_TRAIN,
        *overrides,
        "--no-progress",
    ]
    assert main(args) == 0
    return run_dir / "checkpoints" / "latest.safetensors"


@pytest.fixture(scope="module")
def checkpoint(chairs_dir, tmp_path_factory) -> Path:
    return train_tiny(chairs_dir, tmp_path_factory.mktemp("render_run"))


@pytest.fixture(scope="module")
def renderer(checkpoint) -> ChairRenderer:
    return ChairRenderer(checkpoint)


def render_cli(checkpoint: Path, *args: str) -> int:
    return main(["render", str(checkpoint), *args])


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- angle arguments -----------------------------------------------------------


def test_parse_range_excludes_stop():
    values = parse_angles("0:360:15")
    assert len(values) == 24
    assert values[0] == 0.0
    assert values[-1] == 345.0


def test_parse_lists_floats_and_descending_ranges():
    assert parse_angles("20,30") == [20.0, 30.0]
    assert parse_angles("12.5") == [12.5]
    assert parse_angles("-30, 400") == [-30.0, 400.0]
    assert parse_angles("90:0:-30") == [90.0, 60.0, 30.0]
    assert parse_angles("0:1:0.1") == pytest.approx([i / 10 for i in range(10)])
    assert parse_angles("0:90:45,180") == [0.0, 45.0, 180.0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("nan", "not a finite number"),
        ("0,inf", "not a finite number"),
        ("0:360:0", "step 0"),
        ("0:360", "start:stop:step"),
        ("10:0:5", "empty"),
        ("ten", "not a number"),
        ("0:360:0.01", "more than"),
    ],
)
def test_parse_rejects_bad_angles(text, message):
    with pytest.raises(LabelError, match=message):
        parse_angles(text)


# -- the Python API ------------------------------------------------------------


def test_renderer_lists_chairs(renderer, chairs_dir):
    names = sorted(p.name for p in (chairs_dir / "rendered_chairs").iterdir() if p.is_dir())[:3]
    assert renderer.chairs == names
    assert renderer.image_size == IMAGE_SIZE


def test_render_shape_and_range(renderer):
    image = renderer.render(renderer.chairs[0], 45.0, 20.0)
    assert image.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert image.dtype == torch.float32
    assert 0.0 <= float(image.min())
    assert float(image.max()) <= 1.0


def test_render_matches_model_forward(renderer):
    model = renderer.model
    inputs = model.conditioner.encode_values({"chair": [renderer.chairs[1]], "azimuth_deg": [100.0], "elevation_deg": [25.0]})
    with torch.no_grad():
        expected = model(inputs)[0]
    torch.testing.assert_close(renderer.render(renderer.chairs[1], 100.0, 25.0), expected)


def test_render_wraps_azimuth(renderer):
    chair = renderer.chairs[0]
    torch.testing.assert_close(renderer.render(chair, 0.0, 20.0), renderer.render(chair, 360.0, 20.0), atol=1e-5, rtol=0)
    assert (renderer.render(chair, 0.0, 20.0) - renderer.render(chair, 90.0, 20.0)).abs().max() > 0


def test_chair_index_equals_name(renderer):
    by_index = renderer.render(2, 30.0, 20.0)
    by_text_index = renderer.render("2", 30.0, 20.0)
    by_name = renderer.render(renderer.chairs[2], 30.0, 20.0)
    torch.testing.assert_close(by_index, by_name)
    torch.testing.assert_close(by_text_index, by_name)


def test_unknown_chair_names_closest(renderer):
    near_miss = renderer.chairs[1][:-1] + ("0" if renderer.chairs[1][-1] != "0" else "1")
    with pytest.raises(LabelError) as error:
        renderer.resolve_chair(near_miss)
    assert near_miss in str(error.value)
    assert f"closest valid names: {renderer.chairs[1]}" in str(error.value)
    with pytest.raises(LabelError, match="outside 0..2"):
        renderer.resolve_chair(3)


def test_render_views_pairs_angles(renderer):
    chair = renderer.chairs[0]
    images = renderer.render_views(chair, [0.0, 90.0, 180.0], 30.0)
    assert images.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.testing.assert_close(images[1], renderer.render(chair, 90.0, 30.0))
    with pytest.raises(LabelError, match="2 azimuths but 3 elevations"):
        renderer.render_views(chair, [0.0, 90.0], [20.0, 30.0, 25.0])


def test_morph_endpoints_are_the_chairs(renderer):
    chair_a, chair_b = renderer.chairs[0], renderer.chairs[2]
    frames = renderer.morph(chair_a, chair_b, steps=5, azimuth_deg=60.0, elevation_deg=20.0)
    assert frames.shape == (5, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.testing.assert_close(frames[0], renderer.render(chair_a, 60.0, 20.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(frames[-1], renderer.render(chair_b, 60.0, 20.0), atol=1e-6, rtol=0)


def test_morph_midpoint_uses_mean_embedding(renderer):
    chair_a, chair_b = renderer.chairs[0], renderer.chairs[1]
    middle = renderer.morph(chair_a, chair_b, steps=3, azimuth_deg=10.0, elevation_deg=30.0)[1]
    conditioner = renderer.model.conditioner
    table = conditioner.tables["chair"].weight
    inputs = conditioner.encode_values({"chair": [chair_a], "azimuth_deg": [10.0], "elevation_deg": [30.0]})
    features = []
    with torch.no_grad():
        for spec in conditioner.config.labels:
            if spec.name == "chair":
                features.append(((table[0] + table[1]) / 2).unsqueeze(0))
            else:
                angle = inputs[spec.name] * (2 * np.pi / spec.period)
                features.append(conditioner.periodic[spec.name](torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1)))
        expected = renderer.model.decode(conditioner.fuse(torch.cat(features, dim=-1)))[0]
    torch.testing.assert_close(middle, expected, atol=1e-5, rtol=0)


def test_turntable_covers_full_turn(renderer):
    chair = renderer.chairs[1]
    frames = renderer.turntable(chair, elevation_deg=20.0, frames=4)
    assert frames.shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.testing.assert_close(frames[1], renderer.render(chair, 90.0, 20.0))
    torch.testing.assert_close(frames[3], renderer.render(chair, 270.0, 20.0))


def test_to_pil_scales_and_rounds():
    image = torch.zeros(3, 2, 2)
    image[0, 0, 0] = 1.0
    image[1, 1, 1] = 0.5
    picture = to_pil(image, scale=3)
    assert picture.size == (6, 6)
    pixels = np.asarray(picture)
    assert tuple(pixels[0, 0]) == (255, 0, 0)
    assert tuple(pixels[5, 5]) == (0, 128, 0)


# -- the command line ----------------------------------------------------------


def test_cli_grid_size_and_tiles(checkpoint, renderer, tmp_path):
    output = tmp_path / "grid.png"
    assert render_cli(checkpoint, "--chair", "1", "--azimuth", "0:360:90", "--elevation", "20,30", "--scale", "2", "-o", str(output)) == 0
    sheet = Image.open(output)
    tile = IMAGE_SIZE * 2
    top = render.TOP_MARGIN + render.TITLE_HEIGHT
    assert sheet.size == (render.LEFT_MARGIN + 4 * tile, top + 2 * tile)
    # Row 1 (elevation 30), column 2 (azimuth 180) is that view, pixel for pixel.
    expected = np.asarray(to_pil(renderer.render(renderer.chairs[1], 180.0, 30.0), scale=2))
    crop = np.asarray(sheet.convert("RGB"))[top + tile : top + 2 * tile, render.LEFT_MARGIN + 2 * tile : render.LEFT_MARGIN + 3 * tile]
    np.testing.assert_array_equal(crop, expected)


def test_cli_morph_grid_size(checkpoint, tmp_path):
    output = tmp_path / "morph.png"
    assert render_cli(checkpoint, "--chair", "0", "--chair-b", "2", "--steps", "5", "--azimuth", "0,90", "--elevation", "20", "-o", str(output)) == 0
    sheet = Image.open(output)
    assert sheet.size == (render.LEFT_MARGIN + 5 * IMAGE_SIZE, render.TOP_MARGIN + render.TITLE_HEIGHT + 2 * IMAGE_SIZE)


def test_cli_turntable_frame_count(checkpoint, tmp_path):
    output = tmp_path / "turn.gif"
    assert render_cli(checkpoint, "--chair", "0", "--elevation", "30", "--turntable", str(output), "--frames", "12") == 0
    animation = Image.open(output)
    assert animation.n_frames == 12
    assert animation.size == (IMAGE_SIZE, IMAGE_SIZE + render.CAPTION_HEIGHT)


def test_cli_morph_gif_frame_count(checkpoint, tmp_path):
    output = tmp_path / "morph.gif"
    assert render_cli(checkpoint, "--chair", "0", "--chair-b", "1", "--steps", "6", "-o", str(output)) == 0
    assert Image.open(output).n_frames == 6


def test_cli_unknown_chair_names_closest(checkpoint, renderer, tmp_path, capsys):
    output = tmp_path / "grid.png"
    near_miss = renderer.chairs[0][:-2]
    assert render_cli(checkpoint, "--chair", near_miss, "-o", str(output)) == 2
    assert f"closest valid names: {renderer.chairs[0]}" in capsys.readouterr().err
    assert files_in(tmp_path) == []


def test_cli_rejects_nan_azimuth(checkpoint, tmp_path, capsys):
    output = tmp_path / "grid.png"
    assert render_cli(checkpoint, "--chair", "0", "--azimuth", "0,nan", "-o", str(output)) == 2
    assert "'nan', which is not a finite number" in capsys.readouterr().err
    assert files_in(tmp_path) == []


def test_cli_keeps_existing_file_without_force(checkpoint, tmp_path, capsys):
    output = tmp_path / "grid.png"
    output.write_bytes(b"not overwritten")
    assert render_cli(checkpoint, "--chair", "0", "-o", str(output)) == 2
    assert "exists already; pass --force" in capsys.readouterr().err
    assert output.read_bytes() == b"not overwritten"
    assert files_in(tmp_path) == ["grid.png"]
    assert render_cli(checkpoint, "--chair", "0", "-o", str(output), "--force") == 0
    assert Image.open(output).format == "PNG"


def test_cli_error_leaves_no_output(checkpoint, tmp_path):
    grid, turntable = tmp_path / "grid.png", tmp_path / "turn.gif"
    assert render_cli(checkpoint, "--chair", "0", "--chair-b", "no_such_chair", "-o", str(grid), "--turntable", str(turntable)) == 2
    assert files_in(tmp_path) == []
    # An existing second output stops the run before the first one is written.
    turntable.write_bytes(b"old")
    assert render_cli(checkpoint, "--chair", "0", "-o", str(grid), "--turntable", str(turntable)) == 2
    assert files_in(tmp_path) == ["turn.gif"]


def test_cli_rejects_wrong_suffix(checkpoint, tmp_path):
    assert render_cli(checkpoint, "--chair", "0", "-o", str(tmp_path / "grid.jpg")) == 2
    assert files_in(tmp_path) == []


# -- a model that embeds the azimuth index -------------------------------------


def test_categorical_azimuth_renders_dataset_angles_only(chairs_dir, tmp_path):
    labels = '[{name = "chair", dim = 4}, {name = "azimuth_index", kind = "categorical", dim = 4}, {name = "elevation_deg", kind = "periodic", dim = 2}]'
    checkpoint = train_tiny(chairs_dir, tmp_path / "run", f"conditioning.labels={labels}")
    renderer = ChairRenderer(checkpoint)
    assert renderer.model.conditioner.vocabularies["azimuth_index"].values == [i for i in range(31) if i % 4]
    image = renderer.render(renderer.chairs[0], 11.0, 20.0)
    inputs = renderer.model.conditioner.encode_values({"chair": [renderer.chairs[0]], "azimuth_index": [1], "elevation_deg": [20.0]})
    with torch.no_grad():
        torch.testing.assert_close(image, renderer.model(inputs)[0])
    with pytest.raises(LabelError, match="nearest: 11"):
        renderer.render(renderer.chairs[0], 12.0, 20.0)
    # Azimuth index 4 (46 degrees) was held out, so it is not in the vocabulary.
    with pytest.raises(LabelError, match="azimuth_index"):
        renderer.render(renderer.chairs[0], 46.0, 20.0)
