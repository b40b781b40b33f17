"""Tests of the procedural chairs: geometry, the software renderer's camera and shading, and the CLI output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import numpy as np
import pytest
from PIL import Image

from condgen.errors import OutputExistsError, RecipeError
from condgen.vision.chairs import AZIMUTHS_DEG, ChairViews, render_file_name
from condgen.vision.synthetic import (
    AMBIENT,
    DIFFUSE,
    MANIFEST_NAME,
    Box,
    add_arguments,
    chair_boxes,
    render_boxes,
    render_chair,
    run,
    sample_chair,
    write_synthetic_chairs,
)

HEADLIGHT = (0.0, 0.0, 1.0)  # light from the camera, in camera coordinates


def chair(k: int = 0, **changes):
    return dataclasses.replace(sample_chair(np.random.default_rng([0, k])), **changes)


def cube(center, size, rotation=None) -> Box:
    return Box(np.asarray(center, float), np.asarray(size, float) / 2, np.eye(3) if rotation is None else rotation)


def rotation_y(angle_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def silhouette(image: np.ndarray) -> np.ndarray:
    return image[..., 0] < 255


def parse_cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


# ---------------------------------------------------------------------------
# Output layout
# ---------------------------------------------------------------------------


def test_output_reads_back_with_62_views(tmp_path):
    out = write_synthetic_chairs(tmp_path / "chairs", n_chairs=2, image_size=32, seed=3)
    dataset = ChairViews(out, image_size=32, cache=False)

    assert dataset.chair_names == ["synthetic_0000", "synthetic_0001"]
    assert len(dataset) == 2 * 62
    for name in dataset.chair_names:
        views = {(row["elevation_deg"], row["azimuth_deg"]) for row in dataset.metadata if row["chair"] == name}
        assert views == {(float(e), float(a)) for e in (20, 30) for a in AZIMUTHS_DEG}
    files = sorted(path.name for path in (out / "synthetic_0000" / "renders").iterdir())
    assert files == sorted(render_file_name(e, k) for e in (20, 30) for k in range(31))

    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["seed"] == 3
    assert [entry["name"] for entry in manifest["chairs"]] == dataset.chair_names
    assert [path.name for path in tmp_path.iterdir()] == ["chairs"], "a temporary folder was left behind"


def test_render_white_background_grey_chair(tmp_path):
    out = write_synthetic_chairs(tmp_path / "chairs", n_chairs=1, image_size=48)
    image = np.asarray(Image.open(out / "synthetic_0000" / "renders" / "image_000_p020_t000_r096.png"))

    assert image.shape == (48, 48, 3)
    for corner in (image[:4, :4], image[:4, -4:], image[-4:, :4], image[-4:, -4:]):
        assert np.all(corner == 255)
    centre = image[16:32, 16:32]
    assert (centre < 250).any(), "the chair must cover the centre"
    assert np.array_equal(image[..., 0], image[..., 1])
    assert np.array_equal(image[..., 0], image[..., 2]), "the chair must be grey"
    # Fully covered pixels carry a face's shade, from AMBIENT to AMBIENT + DIFFUSE.
    assert image.min() >= math.floor(255 * AMBIENT) - 1


def test_azimuths_give_different_images():
    params = chair(1)
    images = [render_chair(params, azimuth, 20, 48).astype(float) for azimuth in (0, 92, 185, 267)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 2.0, (i, j)


# ---------------------------------------------------------------------------
# Renderer oracles
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 2])
def test_front_view_is_mirror_symmetric(k):
    params = chair(k)
    # A light in the camera's vertical plane keeps the shading symmetric too.
    image = render_chair(params, 0, 20, 64, light_direction=(0.0, 0.8, 0.5)).astype(int)
    mirrored = image[:, ::-1]
    assert np.mean(np.abs(image - mirrored) > 2) < 0.005
    assert (silhouette(image) != silhouette(image[:, ::-1])).mean() < 0.005
    # Control: an oblique view is not symmetric, so the check can fail.
    oblique = render_chair(params, 46, 20, 64, light_direction=(0.0, 0.8, 0.5)).astype(int)
    assert np.mean(np.abs(oblique - oblique[:, ::-1]) > 2) > 0.02


def test_orthographic_opposite_views_mirror_silhouette():
    # At elevation 0 an orthographic camera projects along the same line from
    # both sides, so the silhouettes of opposite azimuths are mirror images.
    boxes = chair_boxes(chair(2))
    for azimuth in (0, 90, 23):
        front = render_boxes(boxes, azimuth, 0, 64, projection="orthographic")
        back = render_boxes(boxes, azimuth + 180, 0, 64, projection="orthographic")
        assert (silhouette(back) != silhouette(front)[:, ::-1]).sum() <= 3, azimuth


def test_camera_moves_counter_clockwise():
    # A pole in front of a block (+z): with the camera at +x (azimuth 90) the
    # pole is on the left, at azimuth 270 on the right, at azimuth 0 centred.
    boxes = [cube((0, 0.2, 0), (0.6, 0.4, 0.6)), cube((0, 0.6, 0.4), (0.08, 1.2, 0.08))]
    centres = {}
    for azimuth in (0, 90, 270):
        image = render_boxes(boxes, azimuth, 0, 64, projection="orthographic")
        pole_rows = silhouette(image)[:20]  # rows above the block show the pole alone
        centres[azimuth] = np.nonzero(pole_rows)[1].mean()
    assert centres[90] < 28
    assert centres[270] > 36
    assert abs(centres[0] - 31.5) < 1


def test_orthographic_size_and_lambert_shade():
    # One box, viewed head-on: the front face is a rectangle of known size whose
    # grey level follows Lambert's law for a light 45 degrees above the view axis.
    half = np.array([0.2, 0.3, 0.1])
    radius = float(np.linalg.norm(half))  # the framing fits the bounding sphere
    light = (0.0, math.sin(math.radians(45)), math.cos(math.radians(45)))
    image = render_boxes([cube((0, 0, 0), 2 * half)], 0, 0, 64, projection="orthographic", supersample=1, light_direction=light)

    expected_shade = 255 * (AMBIENT + DIFFUSE * math.cos(math.radians(45)))
    face = image[..., 0] < 255
    assert abs(face[32].sum() - 64 * half[0] / radius) <= 1
    assert abs(face[:, 32].sum() - 64 * half[1] / radius) <= 1
    assert abs(float(image[32, 32, 0]) - expected_shade) <= 1


def test_elevation_shows_top_face():
    # From above, the top face (normal +y) is visible; under a headlight its
    # shade is AMBIENT + DIFFUSE * sin(elevation).
    image = render_boxes([cube((0, 0, 0), (0.4, 0.4, 0.4))], 0, 30, 64, projection="orthographic", supersample=1, light_direction=HEADLIGHT)
    top_shade = round(255 * (AMBIENT + DIFFUSE * math.sin(math.radians(30))))
    front_shade = round(255 * (AMBIENT + DIFFUSE * math.cos(math.radians(30))))
    column = image[:, 32, 0]
    top_rows = np.nonzero(np.abs(column.astype(int) - top_shade) <= 1)[0]
    front_rows = np.nonzero(np.abs(column.astype(int) - front_shade) <= 1)[0]
    assert len(top_rows) > 5
    assert len(front_rows) > 5
    assert top_rows.max() < front_rows.min(), "the top face must appear above the front face"


def test_z_buffer_ignores_drawing_order():
    far = cube((0, 0, -0.2), (0.6, 0.6, 0.2))
    near = cube((0, 0, 0.3), (0.2, 0.2, 0.2), rotation_y(45))
    a = render_boxes([far, near], 0, 0, 64, light_direction=HEADLIGHT)
    b = render_boxes([near, far], 0, 0, 64, light_direction=HEADLIGHT)
    assert np.array_equal(a, b)
    # The centre shows the near box's faces, turned 45 degrees from the light.
    assert abs(float(a[32, 31, 0]) - 255 * (AMBIENT + DIFFUSE * math.cos(math.radians(45)))) <= 1
    assert abs(float(a[22, 32, 0]) - 255 * (AMBIENT + DIFFUSE)) <= 1, "the far box must show around the near one"


def test_perspective_makes_near_boxes_larger():
    boxes = [cube((-0.3, 0, 0.4), (0.2, 0.2, 0.2)), cube((0.3, 0, -0.4), (0.2, 0.2, 0.2))]
    for projection, near_is_larger in (("perspective", True), ("orthographic", False)):
        mask = silhouette(render_boxes(boxes, 0, 0, 96, projection=projection, supersample=1))
        near_width, far_width = mask[:, :48].sum(axis=1).max(), mask[:, 48:].sum(axis=1).max()
        if near_is_larger:
            assert near_width > far_width + 2, projection
        else:
            assert abs(int(near_width) - int(far_width)) <= 1, projection


def test_render_rejects_bad_options():
    with pytest.raises(RecipeError, match="projection"):
        render_chair(chair(), 0, 20, 16, projection="fisheye")
    with pytest.raises(RecipeError, match="supersample"):
        render_chair(chair(), 0, 20, 16, supersample=0)


# ---------------------------------------------------------------------------
# Chair shapes
# ---------------------------------------------------------------------------


def test_chair_parameters_vary_and_are_seeded():
    samples = [sample_chair(np.random.default_rng([0, k])) for k in range(40)]
    assert {s.has_arms for s in samples} == {True, False}
    assert 0 in {s.back_slats for s in samples}
    assert max(s.back_slats for s in samples) >= 3
    assert np.ptp([s.seat_width_m for s in samples]) > 0.15
    assert np.ptp([s.back_tilt_deg for s in samples]) > 10
    assert sample_chair(np.random.default_rng([0, 5])) == samples[5]


@pytest.mark.parametrize("k", range(6))
def test_chair_boxes_symmetric_with_four_legs(k):
    params = chair(k)
    boxes = chair_boxes(params)
    centres = np.array([box.center for box in boxes])
    mirrored = centres * np.array([-1.0, 1.0, 1.0])
    for point in mirrored:
        assert np.min(np.linalg.norm(centres - point, axis=1)) < 1e-9
    on_floor = [box for box in boxes if abs(box.center[1] - box.half_extents[1]) < 1e-9]
    assert len(on_floor) == 4
    highest = max(box.center[1] + box.half_extents[1] for box in boxes)
    assert highest > params.seat_height_m + 0.8 * params.back_height_m * math.cos(math.radians(params.back_tilt_deg))


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def test_cli_refuses_existing_output(tmp_path):
    out = tmp_path / "chairs"
    assert run(parse_cli(str(out), "--n-chairs", "1", "--image-size", "16")) == 0
    first = (out / "synthetic_0000" / "renders" / "image_005_p020_t058_r096.png").read_bytes()

    with pytest.raises(OutputExistsError, match="--force") as error:
        run(parse_cli(str(out), "--n-chairs", "1", "--image-size", "16", "--seed", "9"))
    assert str(out) in str(error.value)

    assert run(parse_cli(str(out), "--n-chairs", "1", "--image-size", "16", "--seed", "9", "--force")) == 0
    second = (out / "synthetic_0000" / "renders" / "image_005_p020_t058_r096.png").read_bytes()
    assert second != first, "--force must replace the output"
    assert json.loads((out / MANIFEST_NAME).read_text())["seed"] == 9
    assert sorted(path.name for path in tmp_path.iterdir()) == ["chairs"]


def test_force_keeps_foreign_folder(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(OutputExistsError, match="not written by chairs-synthetic"):
        write_synthetic_chairs(out, n_chairs=1, image_size=16, force=True)
    assert (out / "holiday.jpg").read_bytes() == b"not ours"


def test_chair_does_not_depend_on_count(tmp_path):
    one_chair = write_synthetic_chairs(tmp_path / "one", n_chairs=1, image_size=16, seed=4)
    three_chairs = write_synthetic_chairs(tmp_path / "three", n_chairs=3, image_size=16, seed=4)
    other_seed = write_synthetic_chairs(tmp_path / "other", n_chairs=1, image_size=16, seed=5)
    name = "synthetic_0000/renders/image_040_p030_t092_r096.png"
    assert (one_chair / name).read_bytes() == (three_chairs / name).read_bytes()
    assert (one_chair / name).read_bytes() != (other_seed / name).read_bytes()


@pytest.mark.parametrize(("option", "value"), [("n_chairs", 0), ("image_size", 4), ("seed", -1)])
def test_write_rejects_bad_values(tmp_path, option, value):
    with pytest.raises(RecipeError, match=option):
        write_synthetic_chairs(tmp_path / "chairs", **{option: value})


@pytest.mark.slow
def test_default_dataset_renders_quickly(tmp_path):
    start = time.perf_counter()
    out = write_synthetic_chairs(tmp_path / "chairs", n_chairs=12)
    elapsed_s = time.perf_counter() - start
    assert len(ChairViews(out, image_size=64, cache=False)) == 12 * 62
    assert elapsed_s < 60, f"12 chairs x 62 views took {elapsed_s:.1f} s"
