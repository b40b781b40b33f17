"""Render chairs from a trained image checkpoint: a Python API and `condgen render`.

    from condgen.vision.render import ChairRenderer
    renderer = ChairRenderer("runs/chairs_64/checkpoints/latest.safetensors")
    image = renderer.render(renderer.chairs[0], azimuth_deg=45, elevation_deg=20)  # [3, H, W]
    renderer.grid(renderer.chairs[0], range(0, 360, 30), [20, 30]).save("grid.png")
    frames = renderer.morph(renderer.chairs[0], renderer.chairs[1], steps=8)  # [8, 3, H, W]

Only the checkpoint is needed: it stores the recipe, the chair vocabulary and
the image size. A chair is named by its folder name or by its index in
`renderer.chairs`. Models that encode the view as periodic labels (sine and
cosine of the angle) render any azimuth and elevation, also between the 31
azimuths of the training data. A model that embeds the azimuth index renders
only those 31 azimuths.

Angles on the command line take one number (`45`), a comma list (`0,90,180`)
or a range `start:stop:step` whose stop is excluded, as in Python's `range`:
`0:360:15` gives the 24 azimuths 0, 15, ..., 345.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from condgen.checkpoint import check_writable, write_bytes_atomic
from condgen.errors import CondgenError, LabelError, OutputExistsError
from condgen.model import LoadedModel, load_model

log = logging.getLogger(__name__)

CHAIR_LABEL = "chair"
# Most values one angle argument may expand to, so that a typo such as
# 0:360:0.001 fails at once instead of rendering 360,000 images.
MAX_ANGLES = 3600
RENDER_BATCH = 64
# Label margins of a grid, in pixels: the column captions above, the row captions on the left.
TOP_MARGIN = 16
LEFT_MARGIN = 56
TITLE_HEIGHT = 16
# Height of the caption strip under each GIF frame, in pixels.
CAPTION_HEIGHT = 14
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)


# ---------------------------------------------------------------------------
# Angle arguments
# ---------------------------------------------------------------------------


def parse_angles(text: str, quantity: str = "azimuth") -> list[float]:
    """Parse `45`, `0,90,180` or `start:stop:step` (stop excluded) into angles in degrees.

    Parts of a comma list may themselves be ranges. A range with a negative
    step counts down. Raises `LabelError` for text that is not a number, a
    non-finite value (nan, inf), a zero step, an empty range or more than
    `MAX_ANGLES` values.
    """
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if ":" in part:
            values.extend(_parse_range(part, text, quantity))
        else:
            values.append(_parse_float(part, text, quantity))
        if len(values) > MAX_ANGLES:
            raise LabelError(f"{quantity} {text!r} gives more than {MAX_ANGLES} values; use a larger step")
    if not values:
        raise LabelError(f"{quantity} {text!r} gives no values")
    return values


def _parse_float(part: str, text: str, quantity: str) -> float:
    try:
        value = float(part)
    except ValueError:
        raise LabelError(
            f"{quantity} {text!r} is invalid: {part!r} is not a number; give degrees as a number such as 45, "
            f"a list such as 0,90,180 or a range start:stop:step such as 0:360:15 (stop excluded)"
        ) from None
    if not math.isfinite(value):
        if part == text.strip():
            raise LabelError(f"{quantity} {part!r} is not a finite number; give degrees such as 0 to 360")
        raise LabelError(f"{quantity} {text!r} contains {part!r}, which is not a finite number; give degrees such as 0 to 360")
    return value


def _parse_range(part: str, text: str, quantity: str) -> list[float]:
    fields = part.split(":")
    if len(fields) != 3:
        raise LabelError(f"{quantity} range {part!r} is invalid; write start:stop:step, e.g. 0:360:15 for 0, 15, ..., 345 (stop excluded)")
    start, stop, step = (_parse_float(field, text, quantity) for field in fields)
    if step == 0:
        raise LabelError(f"{quantity} range {part!r} has step 0; give a non-zero step such as 0:360:15")
    # A small tolerance keeps float rounding from adding the stop value itself, e.g. in 0:1:0.1.
    count = math.ceil((stop - start) / step - 1e-9)
    if count < 1:
        raise LabelError(f"{quantity} range {part!r} is empty; the stop is excluded and must lie beyond the start in the direction of the step")
    if count > MAX_ANGLES:
        raise LabelError(f"{quantity} range {part!r} gives {count} values, more than {MAX_ANGLES}; use a larger step")
    return [start + i * step for i in range(count)]


def format_angle(value: float) -> str:
    """Format degrees compactly: `45`, `22.5`."""
    return f"{value:g}"


# ---------------------------------------------------------------------------
# Images and files
# ---------------------------------------------------------------------------


def to_pil(image: torch.Tensor, scale: int = 1) -> Image.Image:
    """Convert an image `[3, H, W]` in [0, 1] to an RGB PIL image, enlarged `scale` times with nearest neighbours."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image [3, H, W], got shape {tuple(image.shape)}")
    pixels = (image.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)
    picture = Image.fromarray(pixels, mode="RGB")
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    return picture


def png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def captioned(picture: Image.Image, caption: str) -> Image.Image:
    """Return `picture` with a `CAPTION_HEIGHT`-pixel strip below it that shows `caption`."""
    framed = Image.new("RGB", (picture.width, picture.height + CAPTION_HEIGHT), BACKGROUND)
    framed.paste(picture, (0, 0))
    ImageDraw.Draw(framed).text((2, picture.height + 1), caption, fill=TEXT_COLOR, font=_font())
    return framed


def gif_bytes(frames: Sequence[Image.Image], frame_ms: int = 80) -> bytes:
    """Encode frames as a looping GIF.

    Pillow merges consecutive frames that are identical after palette
    quantization into one longer frame. The command line captions every frame
    with its angle or mix weight, so its GIFs keep one frame per view.
    """
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=list(frames[1:]), duration=frame_ms, loop=0)
    return buffer.getvalue()


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def label_grid(
    tiles: Sequence[Sequence[Image.Image]],
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    title: str | None = None,
) -> Image.Image:
    """Lay out equal-size tiles in rows and columns with captions drawn in PIL's default font.

    Row captions may span several lines, separated by newlines.

    The result is `LEFT_MARGIN + n_columns * tile_width` pixels wide and
    `TOP_MARGIN + n_rows * tile_height` high, plus `TITLE_HEIGHT` when a
    title is given.
    """
    n_rows, n_columns = len(tiles), len(tiles[0])
    tile_width, tile_height = tiles[0][0].size
    top = TOP_MARGIN + (TITLE_HEIGHT if title else 0)
    sheet = Image.new("RGB", (LEFT_MARGIN + n_columns * tile_width, top + n_rows * tile_height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    if title:
        draw.text((2, 2), title, fill=TEXT_COLOR, font=font)
    for column, caption in enumerate(column_labels):
        draw.text((LEFT_MARGIN + column * tile_width + 2, top - TOP_MARGIN + 2), caption, fill=TEXT_COLOR, font=font)
    for row, caption in enumerate(row_labels):
        n_lines = caption.count("\n") + 1
        draw.multiline_text((2, top + row * tile_height + tile_height // 2 - 6 * n_lines), caption, fill=TEXT_COLOR, font=font)
        for column in range(n_columns):
            sheet.paste(tiles[row][column], (LEFT_MARGIN + column * tile_width, top + row * tile_height))
    return sheet


# ---------------------------------------------------------------------------
# The renderer
# ---------------------------------------------------------------------------


class ChairRenderer:
    """Render chair views from a trained `chairs` checkpoint.

    `checkpoint` is a checkpoint path or a `LoadedModel`. Images are float32
    tensors `[3, H, W]` in [0, 1] on the CPU, with H = W = `image_size`.
    """

    def __init__(self, checkpoint: str | Path | LoadedModel, device: str | torch.device = "cpu"):
        if isinstance(checkpoint, LoadedModel):
            self.loaded = checkpoint
        else:
            self.loaded = load_model(checkpoint, device=_resolve_device(device), expect_domain="chairs")
        self.model = self.loaded.model
        self.conditioner = self.model.conditioner
        self.device = next(self.model.parameters()).device
        self.image_size: int = int(self.loaded.meta.get("head_meta", {}).get("image_size", getattr(self.model, "image_size", 0)))
        if CHAIR_LABEL not in self.conditioner.tables:
            raise LabelError(
                f"{self.loaded.path}: the model is not conditioned on a categorical {CHAIR_LABEL!r} label "
                f"(labels: {', '.join(self.conditioner.label_names)}), so chairs cannot be chosen by name"
            )

    @property
    def vocabulary(self):
        return self.conditioner.vocabularies[CHAIR_LABEL]

    @property
    def chairs(self) -> list[str]:
        """Names of the chairs the model was trained on; a chair's index is its position here."""
        return [str(name) for name in self.vocabulary.values]

    def resolve_chair(self, chair: str | int) -> str | int:
        """Return the vocabulary value of a chair given by name or by index.

        An exact name wins over an index, so a chair whose name is all digits
        is found by name. Raises `LabelError` naming the closest names.
        """
        values = self.vocabulary.values
        if isinstance(chair, str) and chair in self.vocabulary:
            return chair
        if isinstance(chair, (int, np.integer)) and not isinstance(chair, bool) and chair in self.vocabulary:
            return int(chair)
        index = None
        if isinstance(chair, (int, np.integer)) and not isinstance(chair, bool):
            index = int(chair)
        elif isinstance(chair, str) and chair.strip().lstrip("-").isdigit():
            index = int(chair.strip())
        if index is not None:
            if not 0 <= index < len(values):
                raise LabelError(f"chair index {index} is outside 0..{len(values) - 1}; the model was trained on {len(values)} chairs")
            return values[index]
        return values[self.vocabulary.index(chair)]

    def _view_labels(self, azimuth_deg: float, elevation_deg: float) -> dict[str, object]:
        labels: dict[str, object] = {"azimuth_deg": float(azimuth_deg), "elevation_deg": float(elevation_deg)}
        if "azimuth_index" in self.conditioner.label_names:
            from condgen.vision.chairs import AZIMUTHS_DEG
            from condgen.vision.domain import azimuth_index

            try:
                labels["azimuth_index"] = azimuth_index(azimuth_deg)
            except ValueError:
                nearest = min(AZIMUTHS_DEG, key=lambda value: abs((azimuth_deg - value + 180) % 360 - 180))
                raise LabelError(
                    f"azimuth {format_angle(azimuth_deg)} cannot be rendered: this model embeds the azimuth index, so it renders "
                    f"only the dataset's 31 azimuths floor(k*360/31) (nearest: {nearest}); train with periodic azimuth_deg "
                    f"conditioning to render any angle"
                ) from None
        return labels

    def _inputs(self, chairs: Sequence[str | int], azimuths: Sequence[float], elevations: Sequence[float], mixes: Sequence[tuple[object, object, float]] | None) -> dict[str, torch.Tensor]:
        """Encode one batch; `mixes[i] = (chair_a, chair_b, weight_b)` blends two chairs for item i."""
        rows = []
        for chair, azimuth, elevation in zip(chairs, azimuths, elevations):
            row = self._view_labels(azimuth, elevation)
            row[CHAIR_LABEL] = chair
            rows.append(row)
        missing = [name for name in self.conditioner.label_names if name not in rows[0]]
        if missing:
            raise LabelError(f"the model is conditioned on {', '.join(missing)}, which a chair name and view do not give")
        values = {name: [row[name] for row in rows] for name in self.conditioner.label_names}
        inputs = self.conditioner.encode_values(values, device=self.device)
        if mixes is not None:
            weights = torch.cat([self.conditioner.mix(CHAIR_LABEL, a, b, weight) for a, b, weight in mixes])
            inputs[CHAIR_LABEL] = weights.to(self.device)
        return inputs

    @torch.no_grad()
    def _render(self, chairs: Sequence[str | int], azimuths: Sequence[float], elevations: Sequence[float], mixes=None) -> torch.Tensor:
        outputs = []
        for start in range(0, len(chairs), RENDER_BATCH):
            stop = start + RENDER_BATCH
            inputs = self._inputs(chairs[start:stop], azimuths[start:stop], elevations[start:stop], None if mixes is None else mixes[start:stop])
            output = self.model(inputs)
            outputs.append(self.model.images(output).float().cpu())
        return torch.cat(outputs)

    def render(self, chair: str | int, azimuth_deg: float, elevation_deg: float) -> torch.Tensor:
        """Render one view of a chair: an image `[3, H, W]` in [0, 1]."""
        return self.render_views(chair, [azimuth_deg], [elevation_deg])[0]

    def render_views(self, chair: str | int, azimuth_deg: float | Sequence[float], elevation_deg: float | Sequence[float]) -> torch.Tensor:
        """Render several views of one chair: images `[N, 3, H, W]`.

        `azimuth_deg` and `elevation_deg` are paired item by item. A single
        number is repeated to the length of the other.
        """
        azimuths, elevations = _pair_angles(azimuth_deg, elevation_deg)
        name = self.resolve_chair(chair)
        return self._render([name] * len(azimuths), azimuths, elevations)

    def turntable(self, chair: str | int, elevation_deg: float = 20.0, frames: int = 36, chair_b: str | int | None = None) -> torch.Tensor:
        """Render a full turn at `frames` evenly spaced azimuths from 0 (360 excluded): images `[frames, 3, H, W]`.

        With `chair_b`, frame i also blends the chairs with weight i / (frames - 1)
        for `chair_b`, so the chair morphs while it turns.
        """
        if frames < 1:
            raise LabelError(f"turntable frames must be at least 1, got {frames}")
        azimuths = [i * 360.0 / frames for i in range(frames)]
        elevations = [float(elevation_deg)] * frames
        name = self.resolve_chair(chair)
        if chair_b is None:
            return self._render([name] * frames, azimuths, elevations)
        name_b = self.resolve_chair(chair_b)
        weights = _mix_weights(frames)
        return self._render([name] * frames, azimuths, elevations, mixes=[(name, name_b, w) for w in weights])

    def morph(self, chair_a: str | int, chair_b: str | int, steps: int = 8, azimuth_deg: float = 0.0, elevation_deg: float = 20.0) -> torch.Tensor:
        """Interpolate the chair embedding from `chair_a` to `chair_b` in `steps` steps at one view: `[steps, 3, H, W]`.

        Step i uses the weight i / (steps - 1) for `chair_b`, so the first image
        is `chair_a` and the last `chair_b`.
        """
        return self.morph_views(chair_a, chair_b, steps, [azimuth_deg], [elevation_deg])[0]

    def morph_views(self, chair_a: str | int, chair_b: str | int, steps: int, azimuth_deg: float | Sequence[float], elevation_deg: float | Sequence[float]) -> torch.Tensor:
        """Interpolate from `chair_a` to `chair_b` at several paired views: images `[n_views, steps, 3, H, W]`."""
        if steps < 2:
            raise LabelError(f"morph steps must be at least 2 (the two chairs), got {steps}")
        azimuths, elevations = _pair_angles(azimuth_deg, elevation_deg)
        name_a, name_b = self.resolve_chair(chair_a), self.resolve_chair(chair_b)
        weights = _mix_weights(steps)
        views = [(azimuth, elevation) for azimuth, elevation in zip(azimuths, elevations) for _ in weights]
        mixes = [(name_a, name_b, weight) for _ in azimuths for weight in weights]
        images = self._render([name_a] * len(views), [v[0] for v in views], [v[1] for v in views], mixes=mixes)
        return images.view(len(azimuths), steps, *images.shape[1:])

    def grid(self, chair: str | int, azimuths_deg: Iterable[float], elevations_deg: Iterable[float], scale: int = 1) -> Image.Image:
        """Render a labelled sheet of views: one row per elevation, one column per azimuth."""
        azimuths, elevations = [float(a) for a in azimuths_deg], [float(e) for e in elevations_deg]
        if not azimuths or not elevations:
            raise LabelError("a grid needs at least one azimuth and one elevation")
        name = self.resolve_chair(chair)
        images = self._render([name] * (len(azimuths) * len(elevations)), azimuths * len(elevations), [e for e in elevations for _ in azimuths])
        tiles = [[to_pil(images[row * len(azimuths) + column], scale) for column in range(len(azimuths))] for row in range(len(elevations))]
        return label_grid(
            tiles,
            row_labels=[f"el {format_angle(e)}" for e in elevations],
            column_labels=[f"az {format_angle(a)}" for a in azimuths],
            title=f"chair {name}",
        )

    def morph_grid(self, chair_a: str | int, chair_b: str | int, steps: int, azimuths_deg: Iterable[float], elevations_deg: Iterable[float], scale: int = 1) -> Image.Image:
        """Render a labelled morph sheet: one row per (elevation, azimuth) view, one column per step from `chair_a` to `chair_b`."""
        views = [(float(a), float(e)) for e in elevations_deg for a in azimuths_deg]
        if not views:
            raise LabelError("a morph grid needs at least one azimuth and one elevation")
        name_a, name_b = self.resolve_chair(chair_a), self.resolve_chair(chair_b)
        images = self.morph_views(name_a, name_b, steps, [v[0] for v in views], [v[1] for v in views])
        tiles = [[to_pil(image, scale) for image in row] for row in images]
        return label_grid(
            tiles,
            row_labels=[f"el {format_angle(e)}\naz {format_angle(a)}" for a, e in views],
            column_labels=[f"{w:.2f}" for w in _mix_weights(steps)],
            title=f"chair {name_a} -> {name_b}",
        )


def _mix_weights(steps: int) -> list[float]:
    return [i / (steps - 1) for i in range(steps)] if steps > 1 else [0.0]


def _pair_angles(azimuth_deg: float | Sequence[float], elevation_deg: float | Sequence[float]) -> tuple[list[float], list[float]]:
    azimuths = [float(azimuth_deg)] if isinstance(azimuth_deg, (int, float)) else [float(a) for a in azimuth_deg]
    elevations = [float(elevation_deg)] if isinstance(elevation_deg, (int, float)) else [float(e) for e in elevation_deg]
    if len(azimuths) == 1 and len(elevations) > 1:
        azimuths = azimuths * len(elevations)
    if len(elevations) == 1 and len(azimuths) > 1:
        elevations = elevations * len(azimuths)
    if len(azimuths) != len(elevations):
        raise LabelError(f"got {len(azimuths)} azimuths but {len(elevations)} elevations; give one of each per view, or a single value to repeat")
    if not azimuths:
        raise LabelError("no views requested; give at least one azimuth and elevation")
    return azimuths, elevations


def _resolve_device(name: str | torch.device) -> torch.device:
    from condgen.trainer import pick_device

    return pick_device(str(name), option="--device")


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Render views of a chair from a trained image checkpoint. A .png output is a labelled grid "
        "(rows: elevations, columns: azimuths); with --chair-b it is a morph sheet (rows: views, columns: "
        "steps from --chair to --chair-b). A .gif output is an animation: the morph at the first view with "
        "--chair-b, else a turntable. Angles take a number (45), a list (0,90,180) or a range start:stop:step "
        "with the stop excluded (0:360:15 gives 0, 15, ..., 345)."
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint file, e.g. runs/chairs_64/checkpoints/latest.safetensors")
    parser.add_argument("--chair", required=True, help="chair name (its folder name) or index in the model's chair list")
    parser.add_argument("--chair-b", metavar="CHAIR", help="second chair: morph from --chair to this one by interpolating the chair embedding")
    parser.add_argument("--azimuth", default="0:360:30", help="azimuths in degrees: 45, 0,90,180 or start:stop:step with stop excluded (default 0:360:30)")
    parser.add_argument("--elevation", default="20,30", help="elevations in degrees, same forms as --azimuth (default 20,30; the training data has 20 and 30)")
    parser.add_argument("--steps", type=int, default=8, help="morph steps including both chairs, at least 2 (default 8)")
    parser.add_argument("-o", "--output", type=Path, help="output .png (grid) or .gif (animation) file")
    parser.add_argument("--turntable", type=Path, metavar="GIF", help="also write a turntable GIF at the first elevation; with --chair-b the chair morphs while it turns")
    parser.add_argument("--frames", type=int, default=36, help="turntable frames over 360 degrees (default 36)")
    parser.add_argument("--frame-ms", type=int, default=80, help="GIF frame duration in milliseconds (default 80)")
    parser.add_argument("--scale", type=int, default=1, help="enlarge each image this many times with nearest neighbours (default 1)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def _check_arguments(args: argparse.Namespace) -> None:
    if args.output is None and args.turntable is None:
        raise CondgenError("nothing to write; pass -o FILE.png or FILE.gif, and/or --turntable FILE.gif")
    if args.output is not None and args.output.suffix.lower() not in (".png", ".gif"):
        raise CondgenError(f"-o {args.output}: the file name must end in .png (a grid) or .gif (an animation)")
    if args.turntable is not None and args.turntable.suffix.lower() != ".gif":
        raise CondgenError(f"--turntable {args.turntable}: the file name must end in .gif")
    if args.output is not None and args.turntable is not None and args.output.resolve() == args.turntable.resolve():
        raise CondgenError(f"-o and --turntable name the same file {args.output}; give two different files")
    for name, value, low in (("--steps", args.steps, 2), ("--frames", args.frames, 1), ("--frame-ms", args.frame_ms, 1), ("--scale", args.scale, 1)):
        if value < low:
            raise CondgenError(f"{name} {value} must be at least {low}")
    if args.scale > 16:
        raise CondgenError(f"--scale {args.scale} is more than 16; the images would be needlessly large")
    existing = [str(path) for path in (args.output, args.turntable) if path is not None and path.exists()]
    if existing and not args.force:
        raise OutputExistsError(f"{', '.join(existing)} exists already; pass --force to overwrite")
    for path in (args.output, args.turntable):
        if path is not None:
            _check_output_location(path)


def _check_output_location(path: Path) -> None:
    """Raise `CondgenError` when a file in the way or a read-only folder would stop `path` from being written."""
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CondgenError(f"cannot write {path}: {ancestor} is a file, not a folder; choose another output path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CondgenError(f"cannot write {path}: the folder {ancestor} is not writable; choose another output path or change the folder's permissions")


def _write_outputs(outputs: Sequence[tuple[Path, bytes]], force: bool) -> None:
    """Write all output files or none of them.

    Each file is first written under a hidden name beside its target, and the
    targets are renamed into place only when every file has been written. A
    failure before that removes the hidden files, so existing outputs stay as
    they were. A folder created for an output is left in place.
    """
    for path, _ in outputs:
        check_writable(path, force)
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in outputs:
            hidden = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
            write_bytes_atomic(hidden, data)
            staged.append((hidden, path))
        for hidden, path in staged:
            os.replace(hidden, path)
            log.info("wrote %s", path)
    except BaseException:
        for hidden, _ in staged:
            hidden.unlink(missing_ok=True)
        raise


def _turntable_captions(frames: int) -> list[str]:
    return [f"az {format_angle(round(i * 360.0 / frames, 2))}" for i in range(frames)]


def _animation(frames: torch.Tensor, captions: Sequence[str], args: argparse.Namespace) -> bytes:
    pictures = [captioned(to_pil(frame, args.scale), caption) for frame, caption in zip(frames, captions)]
    return gif_bytes(pictures, args.frame_ms)


def run(args: argparse.Namespace) -> int:
    # Check everything and render everything before writing anything, so bad
    # input leaves no partial output.
    _check_arguments(args)
    azimuths = parse_angles(args.azimuth, "azimuth")
    elevations = parse_angles(args.elevation, "elevation")
    renderer = ChairRenderer(args.checkpoint, device=args.device)
    chair = renderer.resolve_chair(args.chair)
    chair_b = renderer.resolve_chair(args.chair_b) if args.chair_b is not None else None

    outputs: list[tuple[Path, bytes]] = []
    if args.output is not None:
        if args.output.suffix.lower() == ".png":
            if chair_b is None:
                sheet = renderer.grid(chair, azimuths, elevations, scale=args.scale)
            else:
                sheet = renderer.morph_grid(chair, chair_b, args.steps, azimuths, elevations, scale=args.scale)
            outputs.append((args.output, png_bytes(sheet)))
        elif chair_b is not None:
            frames = renderer.morph(chair, chair_b, args.steps, azimuths[0], elevations[0])
            captions = [f"mix {weight:.2f}" for weight in _mix_weights(args.steps)]
            outputs.append((args.output, _animation(frames, captions, args)))
        else:
            frames = renderer.turntable(chair, elevations[0], args.frames)
            outputs.append((args.output, _animation(frames, _turntable_captions(args.frames), args)))
    if args.turntable is not None:
        frames = renderer.turntable(chair, elevations[0], args.frames, chair_b=chair_b)
        captions = _turntable_captions(args.frames)
        if chair_b is not None:
            captions = [f"{caption} {weight:.2f}" for caption, weight in zip(captions, _mix_weights(args.frames))]
        outputs.append((args.turntable, _animation(frames, captions, args)))

    _write_outputs(outputs, args.force)
    return 0
