"""Bad input on every surface, one table row per broken file, recipe value or option.

Each row feeds its input to the real `condgen` command through `main`, the
function that the console script calls (a few rows also run the command as a
separate process), or to the public API. A rejected input must give exit
status 2 and no traceback. Its message must name the file or value and the
fix, and the row's folder must be byte for byte as it was before, so no output
is left behind. Accepted inputs check the converted values against an
independent reader (scipy for WAV files, numpy for images).

The data are tiny files written here, so no row needs the real datasets.
docs/robustness.md lists the rows with their messages; run this module with
`-s` to print the messages.
"""

from __future__ import annotations

import contextlib
import gc
import io
import multiprocessing
import os
import shutil
import struct
import subprocess
import sys
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import scipy.io.wavfile
import soundfile as sf
from PIL import Image

from condgen import tfrecord
from condgen.cli import main
from condgen.errors import DataError
from condgen.synth.nsynth import SAMPLE_RATE, NSynthNotes, write_jsonwav, write_nsynth_tfrecord
from condgen.vision.chairs import ChairViews, render_file_name
from condgen.vision.synthetic import write_synthetic_chairs
from test_chair_readers import write_tfrecord_from_root
from test_nsynth_readers import official_note, sine, tfrecord_features
from test_render import TINY_TRAIN as TINY_CHAIR_TRAIN
from test_render import train_tiny
from test_train_generate import REPO_ROOT, train
from test_train_generate import TINY as TINY_DDSP_TRAIN

ERROR_PREFIX = " ERROR condgen: "
# The note that the WAV rows break, and the chair view that the PNG rows break.
NOTE = "guitar_acoustic_010-060-100"
BAD_CHAIR = "synthetic_0001"
BAD_VIEW = render_file_name(30, 7)
BOMB_SIDE = 20_000


# ---------------------------------------------------------------------------
# Running a command and checking the outcome
# ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """Exit status and stderr of one command. `status` is None when an exception escaped."""

    status: int | None
    stderr: str

    @property
    def message(self) -> str:
        """The logged error lines, without their timestamps."""
        lines = self.stderr.splitlines()
        return "\n".join(line.split(ERROR_PREFIX, 1)[1] for line in lines if ERROR_PREFIX in line)


def run_in_process(command: Callable[[], int]) -> Outcome:
    """Run a `main` call and return what the console script would exit with and print.

    An exception that escapes `main` would end the console script with a
    traceback, so its traceback goes into the returned stderr.
    """
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            status = command()
        except SystemExit as exit_request:  # argparse rejects malformed options this way
            status = exit_request.code
        except Exception:
            status = None
            traceback.print_exc()
    return Outcome(status, stderr.getvalue())


def run_console_script(args: list[str], cache_dir: Path, prefix: list[str] = ()) -> Outcome:
    """Run `python -m condgen.cli ARGS` in a new process, after the command `prefix` when given."""
    env = {**os.environ, "CONDGEN_CACHE_DIR": str(cache_dir)}
    command = [*prefix, sys.executable, "-m", "condgen.cli", *args]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    return Outcome(completed.returncode, completed.stderr)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Map every path under `folder` to its bytes, or to None for a folder."""
    return {str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes() for path in folder.rglob("*")}


def assert_unchanged(folder: Path, before: dict[str, bytes | None]) -> None:
    after = snapshot(folder)
    assert sorted(set(after) - set(before)) == [], "output was left behind"
    assert sorted(set(before) - set(after)) == [], "input files were deleted"
    assert sorted(path for path in before if before[path] != after[path]) == [], "input files were changed"


def assert_no_cache_written(cache_dir: Path) -> None:
    if cache_dir.is_dir():
        assert sorted(path.name for path in cache_dir.rglob("*") if path.suffix in (".npy", ".tmp")) == []


def assert_rejected(outcome: Outcome, words: list[str], request, work: Path) -> None:
    """Check exit status 2, no traceback, and every one of `words` in the error message."""
    printed_message = (outcome.message or outcome.stderr).replace(str(work), "<tmp>")
    print(f"\n[{request.node.name}] {printed_message}")
    assert "Traceback" not in outcome.stderr
    assert outcome.status == 2
    for word in words:
        assert word in outcome.message, f"{word!r} is not in the message {outcome.message!r}"


def fill(words, **facts) -> list[str]:
    return [word.format(**facts) for word in words]


# ---------------------------------------------------------------------------
# Tiny data and checkpoints, built once
# ---------------------------------------------------------------------------


def nsynth_train_args(data_root: Path, data_path: str, run_dir: Path) -> list[str]:
    """The arguments with which `train` runs 2 steps of the tiny DDSP recipe, on one data path."""
    return [
        "train",
        str(REPO_ROOT / "recipes" / "nsynth_ddsp.toml"),
        f"data.root={data_root}",
        f'data.path=["{data_path}"]',
        "data.pitch_min=60",
        "data.pitch_max=60",
        f"run_dir={run_dir}",
        "train.steps=2",
        *TINY_DDSP_TRAIN,
        "--no-progress",
    ]


def pitch_60_features(note_str: str) -> dict:
    """TFRecord features of a note in the official schema: a 261.63 Hz sine (MIDI pitch 60)."""
    return tfrecord_features(official_note(note_str, audio=sine(frequency_hz=261.63)))


@pytest.fixture(scope="module")
def notes_root(tmp_path_factory) -> Path:
    """A folder with nsynth-mini.tfrecord, the file that `train` reads: 4 notes of pitch 60."""
    root = tmp_path_factory.mktemp("notes")
    names = [f"{instrument}-060-{velocity:03d}" for instrument in ("brass_acoustic_016", "guitar_acoustic_010") for velocity in (75, 127)]
    notes = [official_note(name, audio=sine(frequency_hz=261.63), note_id=i) for i, name in enumerate(names)]
    write_nsynth_tfrecord(root / "nsynth-mini.tfrecord", notes)
    return root


@pytest.fixture(scope="module")
def ddsp_checkpoint(notes_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ddsp_run")
    assert train(notes_root, run_dir, 2) == 0
    return run_dir / "checkpoints" / "latest.safetensors"


@pytest.fixture(scope="module")
def chairs_root(tmp_path_factory) -> Path:
    """A folder with rendered_chairs/: 3 procedural chairs at the 62 views, 32x32 pixels."""
    root = tmp_path_factory.mktemp("chairs")
    write_synthetic_chairs(root / "rendered_chairs", n_chairs=3, image_size=32, seed=0)
    return root


@pytest.fixture(scope="module")
def chair_checkpoint(chairs_root, tmp_path_factory) -> Path:
    return train_tiny(chairs_root, tmp_path_factory.mktemp("chairs_run"))


@pytest.fixture
def work(tmp_path) -> Path:
    """The row's folder for inputs and outputs. It must be unchanged after a rejection."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


# ---------------------------------------------------------------------------
# NSynth TFRecords
# ---------------------------------------------------------------------------


def two_records(folder: Path, second: dict) -> dict:
    """Write notes.tfrecord with a good record followed by `second`, and return the file name and the second offset."""
    first = pitch_60_features("brass_acoustic_016-060-075")
    tfrecord.write_tfrecord(folder / "notes.tfrecord", [first, second])
    return {"name": "notes.tfrecord", "offset": 16 + len(tfrecord.encode_example(first))}


def flipped_byte(folder: Path) -> dict:
    facts = two_records(folder, pitch_60_features("guitar_acoustic_010-060-127"))
    path = folder / facts["name"]
    data = bytearray(path.read_bytes())
    data[facts["offset"] + 12 + 500] ^= 0xFF  # inside the second record's data
    path.write_bytes(bytes(data))
    return facts


def truncated_final_record(folder: Path) -> dict:
    facts = two_records(folder, pitch_60_features("guitar_acoustic_010-060-127"))
    path = folder / facts["name"]
    path.write_bytes(path.read_bytes()[:-1000])
    return facts


def gzip_named_plain(folder: Path) -> dict:
    tfrecord.write_tfrecord(folder / "notes.tfrecord", [pitch_60_features("guitar_acoustic_010-060-127")], compress=True)
    return {"name": "notes.tfrecord"}


def gzip_with_gz_suffix(folder: Path) -> dict:
    tfrecord.write_tfrecord(folder / "notes.tfrecord.gz", [pitch_60_features("guitar_acoustic_010-060-127")], compress=True)
    return {"name": "notes.tfrecord.gz"}


def empty_tfrecord(folder: Path) -> dict:
    (folder / "notes.tfrecord").write_bytes(b"")
    return {"name": "notes.tfrecord"}


def audio_of_48000_values(folder: Path) -> dict:
    second = pitch_60_features("guitar_acoustic_010-060-127")
    second["audio"] = sine(48000, frequency_hz=261.63)
    return two_records(folder, second)


def record_without_pitch(folder: Path) -> dict:
    second = pitch_60_features("guitar_acoustic_010-060-127")
    del second["pitch"]
    return two_records(folder, second)


TFRECORD_ROWS = [
    pytest.param(flipped_byte, ("notes.tfrecord: record at byte {offset}", "CRC of the record data does not match", "copy or write it again"), id="flipped-byte"),
    pytest.param(truncated_final_record, ("notes.tfrecord: record at byte {offset}", "truncated TFRecord file", "copy or write it again"), id="truncated-final-record"),
    pytest.param(gzip_named_plain, ("notes.tfrecord: is gzip-compressed", "gunzip -c notes.tfrecord > notes-plain.tfrecord"), id="gzip-named-plain"),
    pytest.param(gzip_with_gz_suffix, ("notes.tfrecord.gz: is gzip-compressed", "gunzip -k notes.tfrecord.gz"), id="gzip-gz-suffix"),
    pytest.param(empty_tfrecord, ("notes.tfrecord: the TFRecord file is empty", "copy or write it again"), id="empty-file"),
    pytest.param(audio_of_48000_values, ("notes.tfrecord: record at byte {offset}", "audio has 48000 samples, expected 64000", "pad or trim"), id="audio-48000-values"),
    pytest.param(record_without_pitch, ("notes.tfrecord: record at byte {offset}", "missing feature 'pitch'", "write the file again"), id="no-pitch"),
]


@pytest.mark.parametrize("build, words", TFRECORD_ROWS)
def test_train_rejects_bad_tfrecord(build, words, work, request):
    facts = build(work)
    before = snapshot(work)

    outcome = run_in_process(lambda: train(work, work / "run", 2, f'data.path=["{facts["name"]}"]'))

    assert_rejected(outcome, fill(words, **facts), request, work)
    assert_unchanged(work, before)


@pytest.mark.parametrize("build, words", TFRECORD_ROWS)
def test_nsynth_notes_rejects_bad_tfrecord(build, words, work):
    facts = build(work)

    with pytest.raises(DataError) as error:
        NSynthNotes(work / facts["name"])

    for word in fill(words, **facts):
        assert word in str(error.value)


# ---------------------------------------------------------------------------
# NSynth WAV files, in the json/wav layout and in folders of named WAVs
# ---------------------------------------------------------------------------


def jsonwav_folder(folder: Path, write_wav: Callable[[Path], None]) -> Path:
    """Write a json/wav folder with one note, whose WAV file `write_wav` then writes; return that file."""
    write_jsonwav(folder, [official_note(NOTE)])
    wav = folder / "audio" / f"{NOTE}.wav"
    wav.unlink()
    write_wav(wav)
    return wav


def named_wavs_folder(folder: Path, write_wav: Callable[[Path], None]) -> Path:
    folder.mkdir()
    wav = folder / f"{NOTE}.wav"
    write_wav(wav)
    return wav


WAV_LAYOUTS = {"jsonwav": jsonwav_folder, "named-wavs": named_wavs_folder}


def wav_44k1(path: Path) -> None:
    sf.write(path, sine(4 * 44100, sample_rate=44100), 44100, subtype="PCM_16")


def wav_stereo(path: Path) -> None:
    sf.write(path, np.stack([sine(), sine()], axis=1), SAMPLE_RATE, subtype="PCM_16")


def wav_zero_length(path: Path) -> None:
    sf.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")


def text_named_wav(path: Path) -> None:
    path.write_text("a text file, not audio\n")


WAV_REJECTED_ROWS = [
    pytest.param(wav_44k1, ("sample rate 44100 Hz, expected 16000 Hz", "resample the note to 16000 Hz"), id="44k1"),
    pytest.param(wav_stereo, ("2 channels, expected 1 (mono)", "mix the note down to mono"), id="stereo"),
    pytest.param(wav_zero_length, ("0 samples, expected 64000", "pad or trim"), id="zero-length"),
    pytest.param(text_named_wav, ("cannot read the file as audio", "replace it with a 16-bit PCM WAV file"), id="text-file"),
]


@pytest.mark.parametrize("layout", sorted(WAV_LAYOUTS))
@pytest.mark.parametrize("write_wav, words", WAV_REJECTED_ROWS)
def test_train_rejects_bad_wav(layout, write_wav, words, work, request):
    wav = WAV_LAYOUTS[layout](work / "notes", write_wav)
    before = snapshot(work)

    outcome = run_in_process(lambda: train(work, work / "run", 2, 'data.path=["notes"]'))

    assert_rejected(outcome, [f"{wav}: ", *words], request, work)
    assert_unchanged(work, before)


# Accepted sample formats and how scipy's reading of the file maps to the reader's float32 samples.
WAV_ACCEPTED_ROWS = [
    pytest.param("FLOAT", lambda raw: raw, id="float32"),
    pytest.param("PCM_U8", lambda raw: (raw.astype(np.float32) - 128) / 128, id="8-bit"),
    pytest.param("PCM_24", lambda raw: raw.astype(np.float32) / 2**31, id="24-bit"),
]


# soundfile writes a PEAK chunk into float WAVs, which scipy skips with a warning.
@pytest.mark.filterwarnings("ignore::scipy.io.wavfile.WavFileWarning")
@pytest.mark.parametrize("layout", sorted(WAV_LAYOUTS))
@pytest.mark.parametrize("subtype, from_scipy", WAV_ACCEPTED_ROWS)
def test_wav_format_accepted(layout, subtype, from_scipy, work):
    wav = WAV_LAYOUTS[layout](work / "notes", lambda path: sf.write(path, sine(amplitude=0.9), SAMPLE_RATE, subtype=subtype))

    item = NSynthNotes(work / "notes")[0]
    sample_rate, raw = scipy.io.wavfile.read(wav)

    assert sample_rate == SAMPLE_RATE
    assert item["audio"].dtype.is_floating_point
    np.testing.assert_array_equal(item["audio"].numpy(), from_scipy(raw))


@pytest.mark.parametrize("layout", sorted(WAV_LAYOUTS))
def test_float_wav_above_full_scale_rejected(layout, work):
    wav = WAV_LAYOUTS[layout](work / "notes", lambda path: sf.write(path, sine(amplitude=1.5), SAMPLE_RATE, subtype="FLOAT"))
    notes = NSynthNotes(work / "notes")  # the header is valid, and the samples are checked only when read

    with pytest.raises(DataError) as error:
        notes[0]

    assert f"{wav}: audio peak is 1.5000, expected at most 1.0" in str(error.value)
    assert "normalise the note" in str(error.value)


# ---------------------------------------------------------------------------
# Chair renders, in the rendered_chairs layout and the course TFRecord layout
# ---------------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def decompression_bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit greyscale PNG of side x side black pixels: about 50 KB that decode to side**2 pixels."""
    row = b"\x00" * (1 + side // 8)  # filter type 0, then the packed bits
    compressor = zlib.compressobj(9)
    block = row * 1000
    image_data = b"".join(compressor.compress(block) for _ in range(side // 1000)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", image_data) + png_chunk(b"IEND", b"")


def bad_view_path(root: Path) -> Path:
    return root / BAD_CHAIR / "renders" / BAD_VIEW


def truncate_png(root: Path) -> Path:
    path = bad_view_path(root)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def replace_with_bomb(root: Path) -> Path:
    path = bad_view_path(root)
    path.write_bytes(decompression_bomb_png())
    return path


def add_name_outside_pattern(root: Path) -> Path:
    path = bad_view_path(root).with_name("chair.png")
    shutil.copyfile(bad_view_path(root), path)
    return path


def empty_renders_folder(root: Path) -> Path:
    renders = root / BAD_CHAIR / "renders"
    shutil.rmtree(renders)
    renders.mkdir()
    return renders


def empty_root_folder(root: Path) -> Path:
    shutil.rmtree(root)
    root.mkdir()
    return root


def copy_root(chairs_root: Path, work: Path) -> Path:
    return Path(shutil.copytree(chairs_root / "rendered_chairs", work / "rendered_chairs"))


def chair_train_args(source: Path, work: Path, cache_dir: Path, *overrides: str) -> list[str]:
    return [
        "train",
        str(REPO_ROOT / "recipes" / "chairs_64.toml"),
        f"data.root={source}",
        f"data.cache_dir={cache_dir}",
        f"run_dir={work / 'run'}",
        *TINY_CHAIR_TRAIN,
        *overrides,
        "--no-progress",
    ]


CHAIR_FOLDER_ROWS = [
    pytest.param(truncate_png, ("{file}", "cannot decode the PNG", "truncated or corrupt", "replace it"), id="truncated-png"),
    pytest.param(replace_with_bomb, ("{file}", "20000x20000 pixels", "decompression bomb", "replace it"), id="decompression-bomb"),
    pytest.param(add_name_outside_pattern, ("{file}", "does not match image_XXX_pPPP_tTTT_r096.png", "rename the file or move it out"), id="name-outside-pattern"),
    pytest.param(empty_renders_folder, ("{file}: contains no images", "expected files named image_XXX_pPPP_tTTT_r096.png"), id="empty-renders-folder"),
    pytest.param(empty_root_folder, ("{file}: contains no chair folders", "expected <root>/<chair>/renders/"), id="empty-root-folder"),
]


@pytest.mark.parametrize("damage, words", CHAIR_FOLDER_ROWS)
def test_train_rejects_bad_chair_folder(damage, words, chairs_root, work, cache_dir, request):
    root = copy_root(chairs_root, work)
    path = damage(root)
    before = snapshot(work)

    outcome = run_in_process(lambda: main(chair_train_args(root, work, cache_dir)))

    assert_rejected(outcome, fill(words, file=path), request, work)
    assert_unchanged(work, before)
    assert_no_cache_written(cache_dir)


def chair_tfrecord(chairs_root: Path, work: Path, damage: Callable[[Path], Path]) -> dict:
    """Write chairs.tfr from a damaged copy of the renders, and return its path and the damaged record's offset."""
    root = copy_root(chairs_root, work)
    damaged = damage(root).read_bytes()
    path = write_tfrecord_from_root(root, work / "chairs.tfr")
    shutil.rmtree(root)
    offset = next(offset for offset, data in tfrecord.iter_records(path) if tfrecord.decode_example(data)["img"][0] == damaged)
    return {"path": path, "offset": offset}


def empty_chair_tfrecord(chairs_root: Path, work: Path) -> dict:
    (work / "chairs.tfr").write_bytes(b"")
    return {"path": work / "chairs.tfr"}


def gzip_chair_tfrecord(chairs_root: Path, work: Path) -> dict:
    png = (chairs_root / "rendered_chairs" / BAD_CHAIR / "renders" / BAD_VIEW).read_bytes()
    tfrecord.write_tfrecord(work / "chairs.tfr", [{"img": png, "id": 0, "rot": 7, "ele": 1}], compress=True)
    return {"path": work / "chairs.tfr"}


CHAIR_TFRECORD_ROWS = [
    pytest.param(lambda root, work: chair_tfrecord(root, work, truncate_png), ("chairs.tfr: record at byte {offset}", "cannot decode the PNG", "replace it"), id="truncated-png"),
    pytest.param(lambda root, work: chair_tfrecord(root, work, replace_with_bomb), ("chairs.tfr: record at byte {offset}", "20000x20000 pixels", "decompression bomb"), id="decompression-bomb"),
    pytest.param(empty_chair_tfrecord, ("chairs.tfr: TFRecord file has no records", "copy or write the file again"), id="empty-file"),
    pytest.param(gzip_chair_tfrecord, ("chairs.tfr: is gzip-compressed", "gunzip -c chairs.tfr > chairs-plain.tfr"), id="gzip-named-plain"),
]


@pytest.mark.parametrize("build, words", CHAIR_TFRECORD_ROWS)
def test_train_rejects_bad_chair_tfrecord(build, words, chairs_root, work, cache_dir, request):
    facts = build(chairs_root, work)
    before = snapshot(work)

    outcome = run_in_process(lambda: main(chair_train_args(facts["path"], work, cache_dir)))

    assert_rejected(outcome, fill(words, **facts), request, work)
    assert_unchanged(work, before)
    assert_no_cache_written(cache_dir)


def grey_landscape() -> tuple[Image.Image, np.ndarray]:
    """A 64x32 greyscale (mode L) PNG, and its expected RGB at 64x64: white bars above and below."""
    grey = (np.arange(64 * 32).reshape(32, 64) % 251).astype(np.uint8)
    padded = np.full((64, 64), 255.0)
    padded[16:48] = grey
    return Image.fromarray(grey, mode="L"), np.repeat(padded[..., None], 3, axis=2)


def translucent_square() -> tuple[Image.Image, np.ndarray]:
    """A 48x48 RGBA PNG with varying alpha, and its expected RGB composited on white."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(48, 48, 4), dtype=np.uint8)
    color, alpha = rgba[..., :3].astype(np.float64), rgba[..., 3:].astype(np.float64) / 255
    return Image.fromarray(rgba, mode="RGBA"), color * alpha + 255 * (1 - alpha)


def box_downscale(rgb: np.ndarray, size: int) -> np.ndarray:
    """Mean over square blocks: the BOX filter when the side is a multiple of `size`."""
    factor = rgb.shape[0] // size
    return rgb.reshape(size, factor, size, factor, 3).mean(axis=(1, 3))


@pytest.mark.parametrize("layout", ["folder", "tfrecord"])
@pytest.mark.parametrize("make_image", [pytest.param(grey_landscape, id="64x32-mode-L"), pytest.param(translucent_square, id="48x48-mode-RGBA")])
def test_png_size_and_mode_converted(layout, make_image, work):
    image, expected_full = make_image()
    renders = work / "rendered_chairs" / "a" / "renders"
    renders.mkdir(parents=True)
    image.save(renders / render_file_name(20, 0))
    source = renders.parents[1]
    if layout == "tfrecord":
        source = write_tfrecord_from_root(source, work / "chairs.tfr")

    item = ChairViews(source, image_size=16, cache=False)[0]
    pixels = item["image"].numpy().transpose(1, 2, 0) * 255

    assert pixels.shape == (16, 16, 3)
    np.testing.assert_allclose(pixels, box_downscale(expected_full, 16), atol=1.0)


# ---------------------------------------------------------------------------
# Bad data found only when an item is read, during training
# ---------------------------------------------------------------------------

def float_wav_above_full_scale(work: Path, chairs_root: Path, cache_dir: Path) -> list[str]:
    named_wavs_folder(work / "notes", lambda path: sf.write(path, sine(amplitude=1.5), SAMPLE_RATE, subtype="FLOAT"))
    return nsynth_train_args(work, "notes", work / "run")


def truncated_pngs_without_cache(work: Path, chairs_root: Path, cache_dir: Path, workers: int = 0) -> list[str]:
    root = copy_root(chairs_root, work)
    for path in root.rglob("*.png"):  # every view, so that the first batch contains a bad one
        path.write_bytes(path.read_bytes()[:200])
    return chair_train_args(root, work, cache_dir, "data.cache=false", f"train.num_workers={workers}")


READ_TIME_ROWS = [
    pytest.param(float_wav_above_full_scale, ("audio peak is 1.5000, expected at most 1.0", "normalise the note"), id="float-wav-above-full-scale"),
    pytest.param(truncated_pngs_without_cache, ("cannot decode the PNG", "replace it"), id="truncated-png-without-cache"),
]


@pytest.mark.parametrize("build, words", READ_TIME_ROWS)
def test_train_rejects_item_on_reading(build, words, chairs_root, work, cache_dir, request):
    args = build(work, chairs_root, cache_dir)
    before = snapshot(work)

    outcome = run_in_process(lambda: main(args))

    assert_rejected(outcome, list(words), request, work)
    assert_unchanged(work, before)


@dataclass
class WorkerFailure:
    """What `condgen train` left after a DataLoader worker failed to read an item."""

    outcome: Outcome
    work: Path
    # Names of the worker processes still running once the command had returned.
    leftover_workers: list[str]


@pytest.fixture(scope="module")
def worker_failure(chairs_root, tmp_path_factory) -> WorkerFailure:
    """Train on truncated PNGs without a cache, reading them in one DataLoader worker."""
    folder = tmp_path_factory.mktemp("worker")
    work = folder / "work"
    work.mkdir()
    args = truncated_pngs_without_cache(work, chairs_root, folder / "cache", workers=1)

    outcome = run_in_process(lambda: main(args))

    gc.collect()  # frees the DataLoader iterator, whose shutdown stops its workers
    leftover = multiprocessing.active_children()
    for child in leftover:
        child.kill()  # a worker that ignores SIGTERM would keep this test session from exiting
        child.join()
    return WorkerFailure(outcome, work, [child.name for child in leftover])


def test_worker_error_without_traceback(worker_failure, request):
    outcome = worker_failure.outcome
    words = ["cannot decode the PNG", "replace it", "(caught DataError in DataLoader worker process 0)"]

    assert_rejected(outcome, words, request, worker_failure.work)


def test_worker_error_leaves_no_worker(worker_failure):
    assert worker_failure.leftover_workers == []


# ---------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------

RECIPE_ROWS = [
    pytest.param(("train.stepz=3",), ("train: unknown key(s) stepz", "did you mean steps?"), id="unknown-key"),
    pytest.param(('train.steps="ten"',), ("train.steps: expected an integer, got str 'ten'",), id="wrong-type"),
    pytest.param(("train.lr=-0.001",), ("train.lr must be a positive number, got -0.001",), id="negative-learning-rate"),
    pytest.param(('head="ddsb"',), ("head 'ddsb' does not exist", "valid heads: ddsp"), id="unknown-head"),
    pytest.param(("data.root={work}/absent",), ("{work}/absent/nsynth-mini.tfrecord: not found", "expected an NSynth TFRecord file"), id="missing-data-path"),
]


@pytest.mark.parametrize("overrides, words", RECIPE_ROWS)
def test_train_rejects_bad_recipe_value(overrides, words, notes_root, work, request):
    before = snapshot(work)

    outcome = run_in_process(lambda: train(notes_root, work / "run", 2, *fill(overrides, work=work)))

    assert_rejected(outcome, fill(words, work=work), request, work)
    assert_unchanged(work, before)


def recipe_with_unknown_key(work: Path) -> Path:
    text = (REPO_ROOT / "recipes" / "nsynth_ddsp.toml").read_text()
    path = work / "recipe.toml"
    path.write_text(text.replace("[model]\n", "[model]\nn_harmonix = 8\n", 1))
    return path


def recipe_not_toml(work: Path) -> Path:
    path = work / "recipe.toml"
    path.write_text("[train\nsteps = 3\n")
    return path


RECIPE_FILE_ROWS = [
    pytest.param(recipe_with_unknown_key, ("model: unknown key(s) n_harmonix", "did you mean n_harmonics?"), id="file-unknown-key"),
    pytest.param(recipe_not_toml, ("recipe {work}/recipe.toml is not valid TOML", "line 1"), id="file-not-toml"),
]


@pytest.mark.parametrize("write_recipe, words", RECIPE_FILE_ROWS)
def test_train_rejects_bad_recipe_file(write_recipe, words, work, request):
    recipe = write_recipe(work)
    before = snapshot(work)

    outcome = run_in_process(lambda: main(["train", str(recipe), f"run_dir={work / 'run'}", "--no-progress"]))

    assert_rejected(outcome, fill(words, work=work), request, work)
    assert_unchanged(work, before)


def test_train_rejects_missing_chair_root(work, cache_dir, request):
    before = snapshot(work)

    outcome = run_in_process(lambda: main(chair_train_args(work / "absent", work, cache_dir)))

    assert_rejected(outcome, [f"{work / 'absent'}: chair data not found", "pass a folder laid out as"], request, work)
    assert_unchanged(work, before)


# ---------------------------------------------------------------------------
# condgen generate and condgen render
# ---------------------------------------------------------------------------


def command_args(command: str, checkpoint: Path, work: Path, changes: dict[str, str]) -> list[str]:
    """Arguments of a valid generate or render command, with `changes` to its options."""
    if command == "generate":
        options = {"--instrument": "brass_acoustic_016", "--pitch": "60", "--velocity": "127", "-o": "{work}/note.wav"}
    else:
        options = {"--chair": "synthetic_0000", "--azimuth": "0,90", "--elevation": "20", "-o": "{work}/grid.png"}
    options.update(changes)
    args = [command, str(checkpoint)]
    for name, value in options.items():
        args += [name, value.format(work=work)]
    return args


CHECKPOINTS = {"generate": "ddsp_checkpoint", "render": "chair_checkpoint"}
# Files that a row writes before the command: name -> bytes.
A_FILE = {"afile": b"a file, not a folder\n"}

COMMAND_ROWS = [
    pytest.param("generate", {"--instrument": "brass_acoustic_01"}, {}, ("instrument_str 'brass_acoustic_01' is not in the model's vocabulary", "closest valid names: brass_acoustic_016"), id="generate-unknown-instrument"),
    pytest.param("generate", {"--pitch": "200"}, {}, ("pitch 200 is outside the valid range 0-127",), id="generate-pitch-200"),
    pytest.param("generate", {"--velocity": "-1"}, {}, ("velocity -1 is outside the valid range 1-127",), id="generate-velocity-minus-1"),
    pytest.param("generate", {"-o": "{work}/afile/note.wav"}, A_FILE, ("cannot create the folder {work}/afile", "a file of that name exists", "choose another output path"), id="generate-output-under-a-file"),
    pytest.param("generate", {"--velocity": "75,127", "-o": "{work}/afile/notes"}, A_FILE, ("{work}/afile is a file, not a folder", "choose another output path"), id="generate-folder-under-a-file"),
    pytest.param("generate", {}, {"note.wav": b"keep me"}, ("{work}/note.wav", "exist already", "pass --force"), id="generate-output-exists"),
    pytest.param("render", {"--chair": "synthetic_0009"}, {}, ("chair 'synthetic_0009' is not in the model's vocabulary", "closest valid names: synthetic_000"), id="render-unknown-chair"),
    pytest.param("render", {"--azimuth": "nan"}, {}, ("azimuth 'nan' is not a finite number", "give degrees"), id="render-azimuth-nan"),
    pytest.param("render", {"-o": "{work}/afile/grid.png"}, A_FILE, ("cannot write {work}/afile/grid.png", "{work}/afile is a file, not a folder", "choose another output path"), id="render-output-under-a-file"),
    pytest.param("render", {"--turntable": "{work}/afile/turn.gif"}, A_FILE, ("cannot write {work}/afile/turn.gif", "choose another output path"), id="render-second-output-under-a-file"),
    pytest.param("render", {}, {"grid.png": b"keep me"}, ("{work}/grid.png exists already", "pass --force"), id="render-output-exists"),
]


@pytest.mark.parametrize("command, changes, files, words", COMMAND_ROWS)
def test_command_rejects_bad_option(command, changes, files, words, work, request):
    checkpoint = request.getfixturevalue(CHECKPOINTS[command])
    for name, data in files.items():
        (work / name).write_bytes(data)
    before = snapshot(work)

    outcome = run_in_process(lambda: main(command_args(command, checkpoint, work, changes)))

    assert_rejected(outcome, fill(words, work=work), request, work)
    assert_unchanged(work, before)


# setpriv (util-linux) drops the capability that lets root write into read-only folders.
WITHOUT_ROOT_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search", "--"]


def permission_enforcing_prefix(folder: Path) -> list[str] | None:
    """Return a command prefix under which writing into the read-only `folder` fails, or None if there is none.

    The prefix is empty for an ordinary user. Root writes anywhere, so for
    root it is setpriv without the override, when setpriv can do that here.
    """
    try:
        (folder / "probe").touch()
    except PermissionError:
        return []
    (folder / "probe").unlink()
    if shutil.which("setpriv") is None:
        return None
    probe = subprocess.run([*WITHOUT_ROOT_OVERRIDE, "touch", str(folder / "probe")], capture_output=True, text=True)
    if probe.returncode != 0 and "Permission denied" in probe.stderr:
        return WITHOUT_ROOT_OVERRIDE
    return None


@pytest.mark.parametrize("command, output, words", [
    pytest.param("generate", "note.wav", ("cannot create a file in the folder {folder}", "Permission denied", "choose a folder that you can write to"), id="generate"),
    pytest.param("render", "grid.png", ("the folder {folder} is not writable", "choose another output path"), id="render"),
])
def test_command_rejects_read_only_folder(command, output, words, work, cache_dir, request):
    checkpoint = request.getfixturevalue(CHECKPOINTS[command])
    folder = work / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    prefix = permission_enforcing_prefix(folder)
    if prefix is None:
        pytest.skip("file permissions do not stop this user (root) from writing, and setpriv cannot drop that override here")
    args = command_args(command, checkpoint, work, {"-o": f"{folder}/{output}"})
    before = snapshot(work)

    if prefix:
        outcome = run_console_script(args, cache_dir, prefix)
    else:
        outcome = run_in_process(lambda: main(args))

    assert_rejected(outcome, fill(words, folder=folder), request, work)
    assert_unchanged(work, before)


# ---------------------------------------------------------------------------
# The same checks through the console script in a separate process
# ---------------------------------------------------------------------------


def train_flipped_byte_args(work: Path, request) -> list[str]:
    return nsynth_train_args(work, flipped_byte(work)["name"], work / "run")


def generate_pitch_200_args(work: Path, request) -> list[str]:
    return command_args("generate", request.getfixturevalue("ddsp_checkpoint"), work, {"--pitch": "200"})


def render_azimuth_nan_args(work: Path, request) -> list[str]:
    return command_args("render", request.getfixturevalue("chair_checkpoint"), work, {"--azimuth": "nan"})


CONSOLE_ROWS = [
    pytest.param(train_flipped_byte_args, ("notes.tfrecord: record at byte", "CRC of the record data does not match", "copy or write it again"), id="train-flipped-byte"),
    pytest.param(generate_pitch_200_args, ("pitch 200 is outside the valid range 0-127",), id="generate-pitch-200"),
    pytest.param(render_azimuth_nan_args, ("azimuth 'nan'", "not a finite number"), id="render-azimuth-nan"),
]


@pytest.mark.parametrize("build_args, words", CONSOLE_ROWS)
def test_console_script_rejects(build_args, words, work, cache_dir, request):
    args = build_args(work, request)
    before = snapshot(work)

    outcome = run_console_script(args, cache_dir)

    assert_rejected(outcome, list(words), request, work)
    assert_unchanged(work, before)
