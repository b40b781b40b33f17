"""Procedural chairs, rendered into the `rendered_chairs` layout by a small numpy renderer.

`condgen data chairs-synthetic OUT` writes `OUT/<chair>/renders/image_XXX_pPPP_tTTT_r096.png`
at the dataset's 62 views (31 azimuths floor(k*360/31) degrees, elevations 20
and 30 degrees), so a machine without the real renders can still run the chair
pipeline end to end. `OUT/synthetic_chairs.json` records the seed and each
chair's parameters. The readers in `condgen.vision.chairs` read the result like
the real data.

Each chair is built from oriented boxes: a seat, four legs, a solid or slatted
back with a random height and backward tilt, and optional arms and stretchers.
Every chair is mirror-symmetric about its x = 0 plane.

World coordinates are in metres: y points up, the floor is y = 0, and the
chair's front faces +z. A camera at azimuth a and elevation e sits in the
direction (cos e sin a, sin e, cos e cos a) from the chair's centre and looks at
it. So azimuth 0 looks at the front of the seat, and the camera moves
counter-clockwise seen from above as the azimuth grows. At azimuth 90 the
chair's front is on the left of the image.

The renderer projects each visible box face (a convex quad) with a perspective
or orthographic camera, fills it through edge functions with a z-buffer, and
shades it flat by Lambert's law under one directional light fixed to the
camera, giving a light grey chair on white. It supersamples and averages the
pixel blocks for antialiasing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from condgen.errors import OutputExistsError, RecipeError
from condgen.vision.chairs import AZIMUTHS_DEG, ELEVATIONS_DEG, render_file_name
from condgen.checkpoint import replace_folder

logger = logging.getLogger(__name__)

__all__ = [
    "Box",
    "ChairParameters",
    "sample_chair",
    "box_faces",
    "chair_boxes",
    "render_boxes",
    "render_chair",
    "write_synthetic_chairs",
    "add_arguments",
    "run",
    "MANIFEST_NAME",
    "DEFAULT_LIGHT_DIRECTION",
]

MANIFEST_NAME = "synthetic_chairs.json"
PROJECTIONS = ("perspective", "orthographic")
# Light direction in camera coordinates (x right, y up, z towards the viewer):
# from above, slightly left and in front, so seat tops are bright and faces
# turned away are dim, as in the real renders.
DEFAULT_LIGHT_DIRECTION = (-0.35, 0.8, 0.5)
AMBIENT = 0.3
DIFFUSE = 0.6
BACKGROUND = 1.0
DEFAULT_FOV_DEG = 30.0
MAX_CHAIRS = 100_000


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Box:
    """An oriented box: `center` (metres, shape `[3]`), `half_extents` (metres, `[3]`, along the
    box's own axes) and `rotation` (`[3, 3]`, whose columns are the box axes in world coordinates)."""

    center: np.ndarray
    half_extents: np.ndarray
    rotation: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))

    def mirrored_x(self) -> "Box":
        """Return the mirror image of this box in the x = 0 plane."""
        mirror = np.diag([-1.0, 1.0, 1.0])
        # M R M keeps a proper rotation, and its box equals the mirror of this box
        # because a box is symmetric under flipping its own x axis.
        return Box(mirror @ self.center, self.half_extents, mirror @ self.rotation @ mirror)


def _box(center: Sequence[float], size: Sequence[float], rotation: np.ndarray | None = None) -> Box:
    """Make a box from its full size (not half extents)."""
    return Box(np.asarray(center, dtype=np.float64), np.asarray(size, dtype=np.float64) / 2.0, np.eye(3) if rotation is None else rotation)


def _rotation_x(angle_deg: float) -> np.ndarray:
    """Rotation about the x axis; a positive angle turns +y towards +z."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def box_faces(boxes: Sequence[Box]) -> tuple[np.ndarray, np.ndarray]:
    """Return the faces of boxes as quads and their outward unit normals.

    Returns:
        `(quads, normals)`: quads of shape `[6 * n_boxes, 4, 3]` with corners in
        cyclic order, and normals of shape `[6 * n_boxes, 3]`, in world metres.
    """
    quads, normals = [], []
    cycle = ((-1, -1), (1, -1), (1, 1), (-1, 1))
    for box in boxes:
        axes = box.rotation * box.half_extents  # [3, 3], column k = half-extent vector along axis k
        for axis in range(3):
            other_a, other_b = [k for k in range(3) if k != axis]
            for sign in (-1.0, 1.0):
                face_center = box.center + sign * axes[:, axis]
                corners = [face_center + sa * axes[:, other_a] + sb * axes[:, other_b] for sa, sb in cycle]
                quads.append(corners)
                normals.append(sign * box.rotation[:, axis])
    return np.asarray(quads, dtype=np.float64), np.asarray(normals, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class ChairParameters:
    """Proportions of one procedural chair, in metres and degrees.

    `back_slats` 0 gives a solid back panel, 2 or more vertical slats under a top rail.
    """

    seat_width_m: float
    seat_depth_m: float
    seat_height_m: float
    seat_thickness_m: float
    leg_thickness_m: float
    leg_inset_m: float
    back_height_m: float
    back_thickness_m: float
    back_tilt_deg: float
    back_slats: int
    has_arms: bool
    arm_height_m: float
    has_stretchers: bool


def sample_chair(rng: np.random.Generator) -> ChairParameters:
    """Draw the proportions of one chair from `rng`."""
    seat_width = rng.uniform(0.38, 0.62)
    return ChairParameters(
        seat_width_m=seat_width,
        seat_depth_m=rng.uniform(0.36, 0.56),
        seat_height_m=rng.uniform(0.36, 0.52),
        seat_thickness_m=rng.uniform(0.025, 0.09),
        leg_thickness_m=rng.uniform(0.025, 0.07),
        leg_inset_m=rng.uniform(0.0, 0.04),
        back_height_m=rng.uniform(0.25, 0.6),
        back_thickness_m=rng.uniform(0.02, 0.06),
        back_tilt_deg=rng.uniform(0.0, 20.0),
        back_slats=int(rng.choice([0, 0, 2, 3, 4, 5])),
        has_arms=bool(rng.random() < 0.4),
        arm_height_m=rng.uniform(0.16, 0.26),
        has_stretchers=bool(rng.random() < 0.5),
    )


def chair_boxes(chair: ChairParameters) -> list[Box]:
    """Build a chair from boxes. It rests on the floor y = 0, faces +z and is symmetric about x = 0."""
    width, depth = chair.seat_width_m, chair.seat_depth_m
    seat_top = chair.seat_height_m
    seat_bottom = seat_top - chair.seat_thickness_m
    leg = chair.leg_thickness_m
    leg_x = width / 2 - chair.leg_inset_m - leg / 2
    leg_z = depth / 2 - chair.leg_inset_m - leg / 2
    boxes = [_box((0.0, seat_bottom + chair.seat_thickness_m / 2, 0.0), (width, chair.seat_thickness_m, depth))]

    # Legs, and stretchers joining the front and back leg of each side.
    for z in (leg_z, -leg_z):
        boxes.append(_box((leg_x, seat_bottom / 2, z), (leg, seat_bottom, leg)))
    if chair.has_stretchers:
        bar = 0.7 * leg
        boxes.append(_box((leg_x, 0.3 * seat_bottom, 0.0), (bar, bar, 2 * leg_z)))

    # The back: tilted about the seat's rear top edge, with its top moving backwards (-z).
    tilt = _rotation_x(-chair.back_tilt_deg)
    thickness, height = chair.back_thickness_m, chair.back_height_m
    pivot = np.array([0.0, seat_top, -depth / 2 + thickness / 2])

    def back_part(x: float, y_center: float, width_m: float, height_m: float) -> Box:
        return _box(pivot + tilt @ np.array([x, y_center, 0.0]), (width_m, height_m, thickness), tilt)

    if chair.back_slats == 0:
        boxes.append(back_part(0.0, height / 2, width, height))
    else:
        post = max(leg, 0.03)
        rail = min(0.3 * height, 0.12)
        boxes.append(back_part(width / 2 - post / 2, height / 2, post, height))
        slat_height = height - rail
        inner = width - 2 * post
        slat_width = inner / (2 * chair.back_slats + 1)
        for k in range(chair.back_slats):
            x = -inner / 2 + (2 * k + 1.5) * slat_width
            if x > 1e-9:
                boxes.append(back_part(x, slat_height / 2, slat_width, slat_height))
            elif abs(x) <= 1e-9:
                boxes.append(back_part(0.0, slat_height / 2, slat_width, slat_height))
        boxes.append(back_part(0.0, height - rail / 2, width, rail))

    # Arms: a rest on each side, held by a post at the front.
    if chair.has_arms:
        arm = 0.045
        arm_y = seat_top + chair.arm_height_m
        boxes.append(_box((width / 2 - arm / 2, arm_y - arm / 4, 0.02), (arm, arm / 2, depth - 0.04)))
        boxes.append(_box((width / 2 - arm / 2, seat_top + chair.arm_height_m / 2, depth / 2 - arm), (0.7 * arm, chair.arm_height_m, 0.7 * arm)))

    return _mirror_pairs(boxes)


def _mirror_pairs(boxes: list[Box]) -> list[Box]:
    """Add the x-mirror of every box that lies off the x = 0 plane, making the chair symmetric."""
    out = []
    for box in boxes:
        out.append(box)
        if abs(box.center[0]) > 1e-9:
            out.append(box.mirrored_x())
    return out


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def _camera_basis(azimuth_deg: float, elevation_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (view direction from the target to the camera, forward, right, up), unit vectors."""
    azimuth, elevation = math.radians(azimuth_deg), math.radians(elevation_deg)
    towards_camera = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation), math.cos(elevation) * math.cos(azimuth)])
    forward = -towards_camera
    right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    if np.linalg.norm(right) < 1e-9:
        # Looking straight down or up: keep the chair's front at the bottom of the image.
        right = np.array([math.cos(azimuth), 0.0, -math.sin(azimuth)])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return towards_camera, forward, right, up


def render_boxes(
    boxes: Sequence[Box],
    azimuth_deg: float,
    elevation_deg: float,
    image_size: int = 128,
    projection: str = "perspective",
    supersample: int = 2,
    light_direction: Sequence[float] = DEFAULT_LIGHT_DIRECTION,
    fov_deg: float = DEFAULT_FOV_DEG,
) -> np.ndarray:
    """Render boxes in light grey on white from a camera at the given view.

    The camera looks at the centre of the boxes' bounding box. It is framed so
    that the bounding sphere just fits the image, so a scene keeps its size
    from every view. `light_direction` points towards the light in camera
    coordinates (x right, y up, z towards the viewer). A face's grey level is
    `AMBIENT + DIFFUSE * max(0, n . l)`.

    Args:
        boxes: the scene.
        azimuth_deg, elevation_deg: camera direction in degrees (see the module docstring).
        image_size: output side length in pixels.
        projection: "perspective" (vertical and horizontal field of view
            `fov_deg`) or "orthographic".
        supersample: samples per pixel along each axis, averaged for antialiasing.

    Returns:
        uint8 array, shape `[image_size, image_size, 3]`.
    """
    if projection not in PROJECTIONS:
        raise RecipeError(f"projection {projection!r} is invalid; use one of {', '.join(PROJECTIONS)}")
    if not (isinstance(image_size, int) and image_size >= 1):
        raise RecipeError(f"image_size must be a positive integer, got {image_size!r}")
    if not (isinstance(supersample, int) and supersample >= 1):
        raise RecipeError(f"supersample must be a positive integer, got {supersample!r}")
    quads, normals = box_faces(boxes)
    corners = quads.reshape(-1, 3)
    target = (corners.min(axis=0) + corners.max(axis=0)) / 2
    radius = float(np.linalg.norm(corners - target, axis=1).max())

    towards_camera, forward, right, up = _camera_basis(azimuth_deg, elevation_deg)
    light = np.asarray(light_direction, dtype=np.float64)
    light = light / np.linalg.norm(light)
    light_world = light[0] * right + light[1] * up + light[2] * towards_camera
    shades = AMBIENT + DIFFUSE * np.clip(normals @ light_world, 0.0, None)  # [F]

    if projection == "perspective":
        half_tan = math.tan(math.radians(fov_deg) / 2)
        camera = target + towards_camera * radius / math.sin(math.radians(fov_deg) / 2)
        visible = np.einsum("fk,fk->f", normals, camera - quads[:, 0]) > 1e-12
    else:
        half_tan = radius  # half the image width in metres
        camera = target + towards_camera * 2 * radius
        visible = normals @ forward < -1e-12

    size = image_size * supersample
    depth_buffer = np.full((size, size), np.inf)
    shade_buffer = np.full((size, size), BACKGROUND)
    for face in np.flatnonzero(visible):
        _fill_face(quads[face], normals[face], shades[face], camera, forward, right, up, half_tan, projection, depth_buffer, shade_buffer)

    grey = shade_buffer.reshape(image_size, supersample, image_size, supersample).mean(axis=(1, 3))
    grey = np.rint(np.clip(grey, 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _fill_face(
    quad: np.ndarray,
    normal: np.ndarray,
    shade: float,
    camera: np.ndarray,
    forward: np.ndarray,
    right: np.ndarray,
    up: np.ndarray,
    half_tan: float,
    projection: str,
    depth_buffer: np.ndarray,
    shade_buffer: np.ndarray,
) -> None:
    """Z-buffer one convex quad `[4, 3]` into the buffers, in place."""
    size = depth_buffer.shape[0]
    relative = quad - camera  # [4, 3]
    x_cam, y_cam, z_cam = relative @ right, relative @ up, relative @ forward
    if projection == "perspective":
        x_ndc, y_ndc = x_cam / (z_cam * half_tan), y_cam / (z_cam * half_tan)
    else:
        x_ndc, y_ndc = x_cam / half_tan, y_cam / half_tan
    # Pixel coordinates in which pixel (row i, column j) has its centre at (i, j).
    cols = (x_ndc + 1) / 2 * size - 0.5
    rows = (1 - y_ndc) / 2 * size - 0.5
    col_lo, col_hi = max(0, math.ceil(cols.min())), min(size - 1, math.floor(cols.max()))
    row_lo, row_hi = max(0, math.ceil(rows.min())), min(size - 1, math.floor(rows.max()))
    if col_lo > col_hi or row_lo > row_hi:
        return
    grid_rows, grid_cols = np.mgrid[row_lo : row_hi + 1, col_lo : col_hi + 1].astype(np.float64)

    # A pixel is inside the convex quad when all four edge functions share a sign.
    positive = np.ones(grid_rows.shape, dtype=bool)
    negative = np.ones(grid_rows.shape, dtype=bool)
    for k in range(4):
        c0, r0, c1, r1 = cols[k], rows[k], cols[(k + 1) % 4], rows[(k + 1) % 4]
        edge = (c1 - c0) * (grid_rows - r0) - (r1 - r0) * (grid_cols - c0)
        positive &= edge >= 0
        negative &= edge <= 0
    inside = positive | negative
    if not inside.any():
        return

    # Depth along `forward` where each pixel's ray meets the face's plane.
    x_pix = (grid_cols + 0.5) / size * 2 - 1
    y_pix = 1 - (grid_rows + 0.5) / size * 2
    plane_offset = normal @ (quad[0] - camera)
    if projection == "perspective":
        ray_dot_normal = normal @ forward + x_pix * half_tan * (normal @ right) + y_pix * half_tan * (normal @ up)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = plane_offset / ray_dot_normal
    else:
        depth = (plane_offset - x_pix * half_tan * (normal @ right) - y_pix * half_tan * (normal @ up)) / (normal @ forward)

    region = (slice(row_lo, row_hi + 1), slice(col_lo, col_hi + 1))
    nearer = inside & (depth < depth_buffer[region])
    depth_buffer[region] = np.where(nearer, depth, depth_buffer[region])
    shade_buffer[region] = np.where(nearer, shade, shade_buffer[region])


def render_chair(chair: ChairParameters, azimuth_deg: float, elevation_deg: float, image_size: int = 128, **options) -> np.ndarray:
    """Render one view of a procedural chair; `options` go to `render_boxes`.

    Returns:
        uint8 array, shape `[image_size, image_size, 3]`.
    """
    return render_boxes(chair_boxes(chair), azimuth_deg, elevation_deg, image_size, **options)


# ---------------------------------------------------------------------------
# Writing the dataset layout
# ---------------------------------------------------------------------------


def _check_output(out_dir: Path, force: bool) -> None:
    """Raise `OutputExistsError` unless `out_dir` may be (re)written."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir}: exists and is a file; choose another output folder")
    if not any(out_dir.iterdir()):
        return
    if not force:
        raise OutputExistsError(f"{out_dir}: exists already; pass --force to replace it")
    if not (out_dir / MANIFEST_NAME).is_file():
        raise OutputExistsError(
            f"{out_dir}: exists and has no {MANIFEST_NAME}, so it was not written by chairs-synthetic; "
            "--force replaces only such folders, so delete it yourself or choose another output folder"
        )


def write_synthetic_chairs(
    out_dir: str | os.PathLike,
    n_chairs: int = 12,
    image_size: int = 128,
    seed: int = 0,
    force: bool = False,
    projection: str = "perspective",
) -> Path:
    """Render `n_chairs` procedural chairs at the dataset's 62 views into `out_dir`.

    Writes `out_dir/synthetic_NNNN/renders/image_XXX_pPPP_tTTT_r096.png` and
    `out_dir/synthetic_chairs.json`. Chair k is drawn from a generator seeded
    with (seed, k), so it does not depend on `n_chairs`. The folder is
    rendered under a temporary name beside `out_dir` and renamed into place
    when complete.

    Raises:
        OutputExistsError: if `out_dir` exists and is not empty, unless
            `force` is set and the folder was written by this function.
        RecipeError: for invalid counts, sizes or seeds.
    """
    out_dir = Path(out_dir)
    for name, value, low in (("n_chairs", n_chairs, 1), ("image_size", image_size, 8), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise RecipeError(f"{name} must be an integer of at least {low}, got {value!r}")
    if n_chairs > MAX_CHAIRS:
        raise RecipeError(f"n_chairs must be at most {MAX_CHAIRS}, got {n_chairs}")
    if projection not in PROJECTIONS:
        raise RecipeError(f"projection {projection!r} is invalid; use one of {', '.join(PROJECTIONS)}")
    _check_output(out_dir, force)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temp_dir = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    width = max(4, len(str(n_chairs - 1)))
    manifest = {"generator": __name__, "seed": seed, "image_size": image_size, "projection": projection, "chairs": []}
    try:
        temp_dir.mkdir()
        views = [(elevation, index) for elevation in ELEVATIONS_DEG for index in range(len(AZIMUTHS_DEG))]
        with tqdm(total=n_chairs * len(views), desc="Rendering chairs", unit="image", disable=None) as progress:
            for k in range(n_chairs):
                chair = sample_chair(np.random.default_rng([seed, k]))
                name = f"synthetic_{k:0{width}d}"
                renders = temp_dir / name / "renders"
                renders.mkdir(parents=True)
                boxes = chair_boxes(chair)
                for elevation, index in views:
                    pixels = render_boxes(boxes, AZIMUTHS_DEG[index], elevation, image_size, projection=projection)
                    Image.fromarray(pixels).save(renders / render_file_name(elevation, index))
                    progress.update(1)
                manifest["chairs"].append({"name": name, **dataclasses.asdict(chair)})
        (temp_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        replace_folder(temp_dir, out_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    logger.info("Wrote %d synthetic chairs x %d views at %dx%d pixels to %s", n_chairs, len(views), image_size, image_size, out_dir)
    return out_dir


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `condgen data chairs-synthetic` to `parser`."""
    parser.add_argument("out", metavar="OUT", type=Path, help="folder to create, laid out as OUT/<chair>/renders/image_XXX_pPPP_tTTT_r096.png")
    parser.add_argument("--n-chairs", type=int, default=12, help="number of chairs to render, each at 62 views (default: 12)")
    parser.add_argument("--image-size", type=int, default=128, help="side length of the PNG images in pixels (default: 128; the real renders are 600)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the chair shapes; chair k depends only on (seed, k) (default: 0)")
    parser.add_argument("--projection", choices=PROJECTIONS, default="perspective", help="camera projection (default: perspective)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists and was written by this command")


def run(args: argparse.Namespace) -> int:
    """Run `condgen data chairs-synthetic` with parsed arguments and return the exit status."""
    write_synthetic_chairs(args.out, n_chairs=args.n_chairs, image_size=args.image_size, seed=args.seed, force=args.force, projection=args.projection)
    return 0
