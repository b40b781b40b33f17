"""Streaming TFRecord readers: sharding over workers and ranks, shuffling, index files, and NSynth and chair items."""

from __future__ import annotations

import gc
import gzip
import io
import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from condgen import cli
from condgen.errors import DataError, LabelError, RecipeError
from condgen.streaming import TFRecordStream, default_index_path, read_index, shuffle_buffered, write_index
from condgen.synth.domain import NSynthDataConfig
from condgen.synth.domain import build_datasets as build_nsynth_datasets
from condgen.synth.nsynth import FAMILIES, QUALITIES, SOURCES, NSynthFilter, NSynthNotes, parse_note_str, write_nsynth_tfrecord
from condgen.synth.stream import NSynthStream
from condgen.tfrecord import decode_example, encode_example, index_records, iter_records, write_tfrecord
from condgen.vision.chairs import AZIMUTHS_DEG, ChairViews, list_chair_folders, split_held_out_views
from condgen.vision.domain import ChairsDataConfig
from condgen.vision.domain import build_datasets as build_chair_datasets
from condgen.vision.stream import ChairStream

N_RECORDS = 23
KINDS = ("plain", "gzip", "indexed")


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """Keep the labels caches of these tests under tmp_path."""
    cache_root = tmp_path / "cache-home"
    monkeypatch.setenv("CONDGEN_CACHE_DIR", str(cache_root))
    return cache_root


def numbered_examples(n_records=N_RECORDS, first_id=0):
    """Records that carry their id, a name and a payload that depends on the id."""
    return [
        {"id": i, "name": f"record-{i}", "payload": np.arange(16, dtype=np.float32) + i}
        for i in range(first_id, first_id + n_records)
    ]


def parse_id(data, where):
    """Return a record's id after checking that its payload belongs to it."""
    features = decode_example(data, where)
    record_id = int(features["id"][0])
    assert features["payload"][0] == record_id
    return record_id


@pytest.fixture(scope="module")
def record_files(tmp_path_factory):
    """A plain, a gzip and an indexed file of the same N_RECORDS records: kind -> (path, index_paths)."""
    folder = tmp_path_factory.mktemp("records")
    plain = folder / "plain.tfrecord"
    compressed = folder / "compressed.tfrecord"
    indexed = folder / "indexed.tfrecord"
    write_tfrecord(plain, numbered_examples())
    write_tfrecord(compressed, numbered_examples(), compress=True)
    write_tfrecord(indexed, numbered_examples())
    write_index(indexed)
    return {
        "plain": (plain, None),
        "gzip": (compressed, None),
        "indexed": (indexed, [default_index_path(indexed)]),
    }


def read_all(stream, n_workers=0):
    return list(DataLoader(stream, batch_size=None, num_workers=n_workers))


def flip_byte(path: Path, position: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[position] ^= 0x01
    path.write_bytes(bytes(raw))


# ---------------------------------------------------------------------------
# Sharding
# ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
@pytest.mark.parametrize("kind", KINDS)
def test_epoch_yields_each_record_once(kind, record_files):
    path, index_paths = record_files[kind]
    for world_size in (1, 2, 3):
        for n_workers in (0, 1, 2, 3):
            per_rank = []
            for rank in range(world_size):
                stream = TFRecordStream(path, parse_id, index_paths=index_paths, rank=rank, world_size=world_size)
                ids = read_all(stream, n_workers)
                per_rank.append(ids)
                case = (kind, world_size, n_workers, rank)
                assert len(ids) == sum(stream.records_per_shard(rank, world_size, n_workers)), case
                # Global record i goes to shard i % n_shards, and rank r owns shards r * w .. r * w + w - 1.
                workers = max(1, n_workers)
                assert all((i % (world_size * workers)) // workers == rank for i in ids), case
            counts = Counter(i for ids in per_rank for i in ids)
            assert sorted(counts) == list(range(N_RECORDS)), (kind, world_size, n_workers)
            assert set(counts.values()) == {1}, (kind, world_size, n_workers)


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
def test_shards_disjoint_per_worker(record_files):
    path, index_paths = record_files["indexed"]
    stream = TFRecordStream(path, parse_id, index_paths=index_paths, rank=1, world_size=2)
    # DataLoader hands out worker outputs in turn, one item each, so with
    # batch_size=None item k comes from worker k % 3 while all three have items.
    ids = read_all(stream, n_workers=3)
    n_shards = 6
    by_worker = [ids[worker::3] for worker in range(3)]
    for worker, worker_ids in enumerate(by_worker):
        assert all(i % n_shards == 3 + worker for i in worker_ids), (worker, worker_ids)
    assert set(by_worker[0]).isdisjoint(by_worker[1])
    assert set(by_worker[1]).isdisjoint(by_worker[2])


def test_files_numbered_globally(tmp_path):
    first = tmp_path / "first.tfrecord"
    second = tmp_path / "second.tfrecord"
    write_tfrecord(first, numbered_examples(7))
    write_tfrecord(second, numbered_examples(10, first_id=100), compress=True)
    write_index(first)
    global_number = {**{i: i for i in range(7)}, **{100 + j: 7 + j for j in range(10)}}

    seen = []
    for rank in range(2):
        stream = TFRecordStream([first, second], parse_id, index_paths=[default_index_path(first), None], rank=rank, world_size=2)
        ids = read_all(stream, n_workers=2)
        assert all((global_number[i] % 4) // 2 == rank for i in ids), (rank, ids)
        seen.extend(ids)
    assert sorted(seen) == sorted(global_number)


def test_count_records_all_kinds(record_files):
    for kind, (path, index_paths) in record_files.items():
        stream = TFRecordStream(path, parse_id, index_paths=index_paths)
        assert stream.count_records() == N_RECORDS, kind
        # 23 records over 2 ranks x 3 workers: shards 0-4 get 4, shard 5 gets 3.
        assert stream.records_per_shard(0, 2, 3) == [4, 4, 4], kind
        assert stream.records_per_shard(1, 2, 3) == [4, 4, 3], kind
        assert stream.records_per_shard(0, 1, 0) == [N_RECORDS], kind


def read_ids_in_process_group(rank, world_size, store, path, out_folder):
    """Join a gloo process group as `rank` and write the ids that a stream without rank arguments reads."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        stream = TFRecordStream(path, parse_id)
        ids = read_all(stream, n_workers=2)
        Path(out_folder, f"rank-{rank}.json").write_text(json.dumps({"rank": stream.rank, "world_size": stream.world_size, "ids": ids}))
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_from_process_group(record_files, tmp_path):
    path, _ = record_files["plain"]
    # fork, unlike spawn, does not import torch and this module again in each process.
    torch.multiprocessing.start_processes(
        read_ids_in_process_group, args=(2, tmp_path / "store", path, tmp_path), nprocs=2, start_method="fork"
    )

    results = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in range(2)]
    assert [(result["rank"], result["world_size"]) for result in results] == [(0, 2), (1, 2)]
    # 2 ranks x 2 workers: rank 1 reads shards 2 and 3.
    assert sorted(results[1]["ids"]) == [i for i in range(N_RECORDS) if i % 4 in (2, 3)]
    assert sorted(results[0]["ids"] + results[1]["ids"]) == list(range(N_RECORDS))


def test_rank_arguments_validated(record_files):
    path, _ = record_files["plain"]
    with pytest.raises(ValueError, match="both rank and world_size"):
        TFRecordStream(path, parse_id, rank=1)
    with pytest.raises(ValueError, match="rank must be an integer from 0 to world_size - 1 = 1"):
        TFRecordStream(path, parse_id, rank=2, world_size=2)
    with pytest.raises(ValueError, match="shuffle_buffer"):
        TFRecordStream(path, parse_id, shuffle_buffer=-1)


# ---------------------------------------------------------------------------
# Shuffling
# ---------------------------------------------------------------------------


def test_same_seed_and_epoch_same_order(record_files):
    path, index_paths = record_files["indexed"]
    first = TFRecordStream(path, parse_id, shuffle_buffer=8, seed=3, index_paths=index_paths)
    second = TFRecordStream(path, parse_id, shuffle_buffer=8, seed=3, index_paths=index_paths)
    first.set_epoch(2)
    second.set_epoch(2)

    order = read_all(first, n_workers=2)
    assert order == read_all(second, n_workers=2)
    assert sorted(order) == list(range(N_RECORDS))
    assert order != sorted(order)


def test_other_epoch_or_seed_reorders(record_files):
    path, _ = record_files["plain"]
    stream = TFRecordStream(path, parse_id, shuffle_buffer=8, seed=3)
    epoch_0 = list(stream)
    stream.set_epoch(1)
    epoch_1 = list(stream)
    other_seed = list(TFRecordStream(path, parse_id, shuffle_buffer=8, seed=4))

    assert sorted(epoch_0) == sorted(epoch_1) == list(range(N_RECORDS))
    assert epoch_0 != epoch_1
    assert epoch_0 != other_seed


def test_buffer_one_keeps_file_order(record_files):
    for kind, (path, index_paths) in record_files.items():
        for buffer_size in (0, 1):
            stream = TFRecordStream(path, parse_id, shuffle_buffer=buffer_size, seed=5, index_paths=index_paths)
            assert list(stream) == list(range(N_RECORDS)), (kind, buffer_size)


def test_buffer_bounds_lookahead():
    # With a buffer of k items, output position p can only hold one of the
    # first p + k inputs, because no more have been read by then.
    for buffer_size in (2, 4, 8):
        for seed in range(5):
            order = list(shuffle_buffered(range(50), buffer_size, np.random.default_rng(seed)))
            assert sorted(order) == list(range(50))
            assert all(item < position + buffer_size for position, item in enumerate(order)), (buffer_size, seed)
            assert order != list(range(50))


def test_buffer_holds_at_most_k_items():
    alive = []

    class Tracked:
        def __init__(self):
            alive.append(self)

    def produce():
        for _ in range(40):
            yield Tracked()

    consumed = 0
    for item in shuffle_buffered(produce(), 6, np.random.default_rng(0)):
        # Inputs created so far, minus outputs already handed out, are in the buffer.
        buffered = len(alive) - consumed
        assert buffered <= 6 + 1, buffered
        consumed += 1
    assert consumed == 40


# ---------------------------------------------------------------------------
# Corrupt and truncated files
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_flipped_byte_names_offset(kind, tmp_path):
    path = tmp_path / "corrupt.tfrecord"
    write_tfrecord(path, numbered_examples())
    offset = index_records(path)[5][0]
    index_paths = None
    if kind == "indexed":
        write_index(path)
        index_paths = [default_index_path(path)]
    flip_byte(path, offset + 12 + 7)
    if kind == "gzip":
        raw = path.read_bytes()
        path.unlink()
        path.write_bytes(gzip.compress(raw))
        expected = rf"corrupt.tfrecord: record at byte {offset} of the decompressed stream: corrupt TFRecord file"
    else:
        expected = rf"corrupt.tfrecord: record at byte {offset}: corrupt TFRecord file"

    with pytest.raises(DataError, match=expected):
        list(TFRecordStream(path, parse_id, index_paths=index_paths))


def test_worker_error_reaches_main_process(tmp_path):
    path = tmp_path / "corrupt.tfrecord"
    write_tfrecord(path, numbered_examples())
    offset = index_records(path)[5][0]
    flip_byte(path, offset + 12 + 7)

    # NOTE: torch 2.14 then waits 5 s for the failed worker to exit when the loader is freed.
    with pytest.raises(DataError, match=rf"corrupt.tfrecord: record at byte {offset}: corrupt TFRecord file"):
        read_all(TFRecordStream(path, parse_id), n_workers=1)
    gc.collect()  # frees the loader here, so that the wait counts against this test


def test_truncated_record_says_truncated(tmp_path):
    path = tmp_path / "cut.tfrecord"
    write_tfrecord(path, numbered_examples())
    last_offset = index_records(path)[-1][0]
    path.write_bytes(path.read_bytes()[:-10])
    compressed = tmp_path / "cut-gzip.tfrecord"
    compressed.write_bytes(gzip.compress(path.read_bytes()))

    # Record 22 belongs to rank 0 of 2; rank 1 skips it and must still notice the cut.
    for rank in (0, 1):
        stream = TFRecordStream(path, parse_id, rank=rank, world_size=2)
        with pytest.raises(DataError, match=rf"cut.tfrecord: record at byte {last_offset}: truncated TFRecord file"):
            list(stream)
        stream = TFRecordStream(compressed, parse_id, rank=rank, world_size=2)
        with pytest.raises(DataError, match=rf"cut-gzip.tfrecord: record at byte {last_offset} of the decompressed stream: truncated"):
            list(stream)


def test_index_skips_other_shards_headers(tmp_path):
    path = tmp_path / "bad-header.tfrecord"
    write_tfrecord(path, numbered_examples())
    write_index(path)
    second_offset = index_records(path)[1][0]
    flip_byte(path, second_offset + 9)  # the length CRC of record 1, which is rank 1's

    indexed = TFRecordStream(path, parse_id, index_paths=[default_index_path(path)], rank=0, world_size=2)
    assert list(indexed) == list(range(0, N_RECORDS, 2))
    # Without an index, rank 0 must read record 1's header to find record 2.
    with pytest.raises(DataError, match=rf"record at byte {second_offset}: corrupt TFRecord file: the CRC of the length field"):
        list(TFRecordStream(path, parse_id, rank=0, world_size=2))


# ---------------------------------------------------------------------------
# Index files
# ---------------------------------------------------------------------------


def test_index_of_tiny_file(tmp_path):
    path = tmp_path / "tiny.tfrecord"
    # {"a": 1} encodes to 14 bytes, so each record takes 12 + 14 + 4 = 30 bytes.
    assert len(encode_example({"a": 1})) == 14
    write_tfrecord(path, [{"a": 1}, {"a": 1}])

    assert write_index(path) == 2
    assert (tmp_path / "tiny.tfindex").read_text() == "0 30\n30 30\n"
    offsets, lengths = read_index(tmp_path / "tiny.tfindex", path)
    assert offsets.tolist() == [0, 30]
    assert lengths.tolist() == [14, 14]


def test_index_matches_tfrecord_package(tmp_path):
    tfrecord2idx = pytest.importorskip("tfrecord.tools.tfrecord2idx", reason="the tfrecord package is not installed")
    reader = pytest.importorskip("tfrecord.reader", reason="the tfrecord package is not installed")
    path = tmp_path / "records.tfrecord"
    write_tfrecord(path, numbered_examples())
    ours = tmp_path / "ours.tfindex"
    theirs = tmp_path / "theirs.tfindex"
    write_index(path, ours)
    tfrecord2idx.create_index(str(path), str(theirs))

    assert ours.read_bytes() == theirs.read_bytes()
    expected = [bytes(data) for _, data in iter_records(path)]
    # The package's reader loads our index and reads the last third of the records through it.
    from_package = [bytes(view) for view in reader.tfrecord_iterator(str(path), str(ours), shard=(2, 3))]
    first = (N_RECORDS * 2) // 3
    assert from_package == expected[first:]
    # Our stream reads through the package's index.
    assert list(TFRecordStream(path, parse_id, index_paths=[theirs], rank=1, world_size=3)) == list(range(1, N_RECORDS, 3))


def test_index_with_wrong_offset_rejected(tmp_path):
    path = tmp_path / "records.tfrecord"
    write_tfrecord(path, numbered_examples(4))
    write_index(path)
    index_path = default_index_path(path)
    lines = index_path.read_text().splitlines()
    offset, length = map(int, lines[2].split())
    lines[2] = f"{offset + 4} {length}"
    index_path.write_text("\n".join(lines) + "\n")

    with pytest.raises(DataError, match=r"records.tfindex: line 3 gives the offset .* does not point at a record header"):
        TFRecordStream(path, parse_id, index_paths=[index_path])


def test_index_of_other_file_rejected(tmp_path):
    path = tmp_path / "records.tfrecord"
    other = tmp_path / "other.tfrecord"
    write_tfrecord(path, numbered_examples(4))
    write_tfrecord(other, numbered_examples(5))
    write_index(other)

    with pytest.raises(DataError, match=r"other.tfindex: its 5 records end at byte \d+, but .*records.tfrecord has \d+ bytes"):
        TFRecordStream(path, parse_id, index_paths=[default_index_path(other)])


def test_index_header_mismatch_rejected(tmp_path):
    # Two files of the same size whose records have other boundaries: the
    # index of one fits the other's size but points into a record's data.
    first = tmp_path / "first.tfrecord"
    second = tmp_path / "second.tfrecord"
    write_tfrecord(first, [{"b": b"x" * 10}, {"b": b"x" * 30}])
    write_tfrecord(second, [{"b": b"x" * 30}, {"b": b"x" * 10}])
    assert first.stat().st_size == second.stat().st_size
    write_index(first)

    def parse_any(data, where):
        return len(data)

    index_paths = [default_index_path(first)]
    rank_0 = TFRecordStream(second, parse_any, index_paths=index_paths, rank=0, world_size=2)
    with pytest.raises(DataError, match=r"second.tfrecord: record at byte 0: the header declares 43 data bytes, but the index .*first.tfindex gives 23"):
        list(rank_0)
    rank_1 = TFRecordStream(second, parse_any, index_paths=index_paths, rank=1, world_size=2)
    with pytest.raises(DataError, match=r"second.tfrecord: record at byte 39: corrupt .*offset comes from the index .*first.tfindex; rebuild it"):
        list(rank_1)


def test_index_garbage_line_rejected(tmp_path):
    path = tmp_path / "records.tfrecord"
    write_tfrecord(path, numbered_examples(2))
    index_path = tmp_path / "records.tfindex"
    index_path.write_text("0 80\nabc 80\n")

    with pytest.raises(DataError, match=r"records.tfindex: line 2 is 'abc 80', expected two decimal integers"):
        read_index(index_path, path)


def test_index_of_gzip_file_rejected(tmp_path):
    path = tmp_path / "records.tfrecord"
    write_tfrecord(path, numbered_examples(2), compress=True)

    with pytest.raises(DataError, match="gzip-compressed"):
        write_index(path)


def test_index_ignored_for_gzip(record_files, caplog):
    path, _ = record_files["gzip"]
    plain_index = default_index_path(record_files["indexed"][0])

    with caplog.at_level("WARNING", logger="condgen.streaming"):
        stream = TFRecordStream(path, parse_id, index_paths=[plain_index], rank=1, world_size=2)
    assert "is gzip-compressed, so its index" in caplog.text
    assert stream.index_paths == [None]
    assert list(stream) == list(range(1, N_RECORDS, 2))


def test_index_command(tmp_path, capsys):
    path = tmp_path / "records.tfrecord"
    write_tfrecord(path, numbered_examples(3))
    expected = "".join(f"{offset} {length + 16}\n" for offset, length in index_records(path))

    assert cli.main(["data", "index", str(path)]) == 0
    assert (tmp_path / "records.tfindex").read_text() == expected

    assert cli.main(["data", "index", str(path)]) == 2
    assert "records.tfindex: exists already" in capsys.readouterr().err

    (tmp_path / "records.tfindex").write_text("stale\n")
    assert cli.main(["data", "index", str(path), "--force"]) == 0
    assert (tmp_path / "records.tfindex").read_text() == expected

    assert cli.main(["data", "index", str(path), str(tmp_path / "named.idx")]) == 0
    assert (tmp_path / "named.idx").read_text() == expected


def test_default_index_path_names():
    assert default_index_path("data/notes.tfrecord") == Path("data/notes.tfindex")
    assert default_index_path("chairs.tfr") == Path("chairs.tfindex")
    assert default_index_path("notes.tfrecord-00001-of-00004") == Path("notes.tfrecord-00001-of-00004.tfindex")


# ---------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------


def test_labels_skip_payload(record_files):
    path, _ = record_files["plain"]
    stream = TFRecordStream(path, parse_id, payload_features=("payload",))

    assert stream.metadata == [{"id": i, "name": f"record-{i}"} for i in range(N_RECORDS)]
    data = next(iter_records(path))[1]
    assert set(decode_example(data, skip=("payload",))) == {"id", "name"}


def test_labels_cache_reused_then_invalidated(tmp_path, cache_in_tmp):
    path = tmp_path / "records.tfrecord"
    write_tfrecord(path, numbered_examples(3))
    assert TFRecordStream(path, parse_id, payload_features=("payload",)).metadata[2] == {"id": 2, "name": "record-2"}
    (cache_file,) = (cache_in_tmp / "labels").iterdir()

    # A changed cache file is what a second stream returns, so the stream reads the cache.
    cached = json.loads(cache_file.read_text())
    cached[2]["name"] = "from-cache"
    cache_file.write_text(json.dumps(cached))
    assert TFRecordStream(path, parse_id, payload_features=("payload",)).metadata[2]["name"] == "from-cache"

    # Rewriting the TFRecord changes its size and modification time, so the labels are read again.
    write_tfrecord(path, numbered_examples(4), force=True)
    labels = TFRecordStream(path, parse_id, payload_features=("payload",)).metadata
    assert [row["name"] for row in labels] == [f"record-{i}" for i in range(4)]


def test_metadata_not_pickled(record_files):
    path, _ = record_files["plain"]
    stream = TFRecordStream(path, parse_id)
    assert len(stream.metadata) == N_RECORDS
    copy = pickle.loads(pickle.dumps(stream))
    assert copy._metadata is None
    assert list(copy) == list(range(N_RECORDS))


# ---------------------------------------------------------------------------
# NSynth
# ---------------------------------------------------------------------------


def official_note(note_str, note_id, seed):
    labels = parse_note_str(note_str)
    qualities = [int(bit) for bit in f"{note_id % 1024:010b}"]
    audio = np.random.default_rng(seed).uniform(-0.9, 0.9, 64000).astype(np.float32)
    return {
        "note": note_id,
        "note_str": note_str,
        "instrument": 10 + note_id,
        "instrument_str": labels["instrument_str"],
        "pitch": labels["pitch"],
        "velocity": labels["velocity"],
        "sample_rate": 16000,
        "audio": audio,
        "qualities": qualities,
        "qualities_str": [name for name, flag in zip(QUALITIES, qualities) if flag],
        "instrument_family": FAMILIES.index(labels["instrument_family_str"]),
        "instrument_family_str": labels["instrument_family_str"],
        "instrument_source": SOURCES.index(labels["instrument_source_str"]),
        "instrument_source_str": labels["instrument_source_str"],
    }


NOTE_NAMES = (
    "guitar_acoustic_010-060-100",
    "bass_electronic_002-036-075",
    "keyboard_synthetic_000-048-127",
    "guitar_acoustic_010-062-100",
    "organ_electronic_001-072-050",
    "string_acoustic_004-055-025",
)


@pytest.fixture(scope="module")
def nsynth_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("nsynth") / "notes.tfrecord"
    write_nsynth_tfrecord(path, [official_note(name, i, seed=i) for i, name in enumerate(NOTE_NAMES)])
    return path


def assert_same_items(streamed, expected):
    assert len(streamed) == len(expected)
    for ours, theirs in zip(streamed, expected):
        assert ours.keys() == theirs.keys()
        assert ours["audio"].dtype == torch.float32
        assert torch.equal(ours["audio"], theirs["audio"]), ours["note_str"]
        for key in ours:
            if key != "audio":
                assert ours[key] == theirs[key], (ours["note_str"], key)


def test_nsynth_items_equal_random_access(nsynth_file):
    notes = NSynthNotes(nsynth_file)
    expected = [notes[i] for i in range(len(notes))]

    assert_same_items(list(NSynthStream(nsynth_file)), expected)
    assert NSynthStream(nsynth_file).metadata == notes.metadata
    write_index(nsynth_file, nsynth_file.with_suffix(".idx"))
    indexed = NSynthStream(nsynth_file, index_paths=[nsynth_file.with_suffix(".idx")])
    streamed = sorted(read_all(indexed, n_workers=2), key=lambda item: item["note"])
    assert_same_items(streamed, expected)


def test_nsynth_gzip_items_equal(nsynth_file, tmp_path):
    compressed = tmp_path / "notes.tfrecord"
    compressed.write_bytes(gzip.compress(nsynth_file.read_bytes(), compresslevel=1))
    notes = NSynthNotes(nsynth_file)

    assert_same_items(list(NSynthStream(compressed)), [notes[i] for i in range(len(notes))])


def test_nsynth_filter_matches_random_access(nsynth_file):
    filters = NSynthFilter(families=["guitar", "organ"])
    notes = NSynthNotes(nsynth_file, filters=filters)
    stream = NSynthStream(nsynth_file, filters=filters)

    assert stream.metadata == notes.metadata
    assert_same_items(list(stream), [notes[i] for i in range(len(notes))])
    # Notes 0, 3 and 4 pass; with 2 shards, shard 0 gets records 0 and 4, shard 1 record 3.
    assert stream.records_per_shard(0, 1, 2) == [2, 1]
    assert stream.records_per_shard(0, 2, 1) == [2]
    assert len(list(NSynthStream(nsynth_file, filters=filters, rank=1, world_size=2))) == 1


def test_nsynth_bad_audio_rejected(tmp_path):
    cases = {"loud": (1.5, r"audio peak is 1.5000, expected at most 1.0"), "nan": (np.nan, "audio contains NaN or infinite samples")}
    for name, (value, message) in cases.items():
        note = official_note(NOTE_NAMES[0], 0, seed=0)
        note["audio"][100] = value
        note["qualities"] = np.asarray(note["qualities"], dtype=np.int64)
        path = tmp_path / f"{name}.tfrecord"
        # write_tfrecord, unlike the NSynth writer, stores the audio unclipped.
        write_tfrecord(path, [note])
        with pytest.raises(DataError, match=rf"{name}.tfrecord: record at byte 0: {message}"):
            list(NSynthStream(path))


def test_nsynth_empty_filter_raises(nsynth_file):
    stream = NSynthStream(nsynth_file, filters=NSynthFilter(families=["vocal"]))
    with pytest.raises(DataError, match="pass the filter"):
        stream.metadata


def test_nsynth_real_file_equals_random_access(nsynth_dir):
    path = nsynth_dir / "nsynth-mini.tfrecord"
    notes = NSynthNotes(path)
    stream = NSynthStream(path, shuffle_buffer=16, seed=1)

    streamed = sorted(read_all(stream, n_workers=2), key=lambda item: item["note_str"])
    expected = sorted((notes[i] for i in range(len(notes))), key=lambda item: item["note_str"])
    assert_same_items(streamed, expected)
    assert stream.metadata == notes.metadata


def test_nsynth_streaming_config(nsynth_file, tmp_path):
    write_index(nsynth_file, default_index_path(nsynth_file), force=True)
    config = NSynthDataConfig(path=[str(nsynth_file)], streaming=True, shuffle_buffer=4)
    train, held_out = build_nsynth_datasets(config, seed=9)

    assert isinstance(train, NSynthStream)
    assert held_out is None
    assert (train.shuffle_buffer, train.seed) == (4, 9)
    assert train.index_paths == [default_index_path(nsynth_file)]
    assert len(list(train)) == len(NOTE_NAMES)

    folder_config = NSynthDataConfig(path=[str(tmp_path)], streaming=True)
    with pytest.raises(RecipeError, match="is a folder, but data.streaming = true reads TFRecord files only"):
        build_nsynth_datasets(folder_config, seed=0)
    with pytest.raises(RecipeError, match="data.shuffle_buffer must be an integer of at least 0"):
        NSynthDataConfig(path=[str(nsynth_file)], shuffle_buffer=-1)


# ---------------------------------------------------------------------------
# Chairs
# ---------------------------------------------------------------------------


def png_bytes(color, size=12):
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), color, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def chairs_file(tmp_path_factory):
    """3 chairs x 2 elevations x 6 azimuths, each image a colour that encodes its view, records shuffled."""
    path = tmp_path_factory.mktemp("chairs") / "chairs.tfr"
    examples = [
        {"img": png_bytes((40 * chair, 8 * rot, 100 + 100 * ele)), "id": chair, "rot": rot, "ele": ele}
        for chair in range(3)
        for ele in (0, 1)
        for rot in range(6)
    ]
    order = np.random.default_rng(0).permutation(len(examples))
    write_tfrecord(path, [examples[i] for i in order])
    return path


CHAIR_NAMES = ["armchair", "bench", "stool"]


def view_key(item):
    return (item["chair_id"], item["elevation_deg"], item["azimuth_deg"])


def test_chair_items_equal_random_access(chairs_file):
    views = ChairViews(chairs_file, image_size=8, names=CHAIR_NAMES, cache=False)
    expected = {view_key(views[i]): views[i] for i in range(len(views))}
    streamed = read_all(ChairStream(chairs_file, image_size=8, names=CHAIR_NAMES, shuffle_buffer=5), n_workers=2)

    assert len(streamed) == len(expected) == 36
    for item in streamed:
        reference = expected[view_key(item)]
        assert item.keys() == reference.keys()
        assert torch.equal(item["image"], reference["image"])
        assert item["chair"] == reference["chair"]
    assert item["image"].shape == (3, 8, 8)


def test_chair_metadata_and_selection(chairs_file):
    views = ChairViews(chairs_file, image_size=8, chairs=["stool", 0], names=CHAIR_NAMES, cache=False)
    stream = ChairStream(chairs_file, image_size=8, chairs=["stool", 0], names=CHAIR_NAMES)

    assert sorted(stream.metadata, key=view_key) == views.metadata
    assert sorted(view_key(item) for item in stream) == [view_key(row) for row in views.metadata]
    with pytest.raises(LabelError, match="chair 'sofa' not found"):
        ChairStream(chairs_file, chairs=["sofa"], names=CHAIR_NAMES)


def test_chair_names_default_to_ids(chairs_file):
    stream = ChairStream(chairs_file, image_size=8)

    assert stream.chair_names == ["0", "1", "2"]
    assert {item["chair"] for item in stream} == {"0", "1", "2"}


def test_chair_held_out_split_matches(chairs_file):
    views = ChairViews(chairs_file, image_size=8, names=CHAIR_NAMES, cache=False)
    train_views, held_out_views = split_held_out_views(views, every=4, offset=1, chairs=["bench"])
    options = dict(image_size=8, names=CHAIR_NAMES, holdout_every=4, holdout_offset=1, holdout_chairs=["bench"])
    train = ChairStream(chairs_file, split="train", **options)
    held_out = ChairStream(chairs_file, split="held_out", **options)

    assert sorted(train.metadata, key=view_key) == train_views.metadata
    assert sorted(held_out.metadata, key=view_key) == held_out_views.metadata
    assert sorted(view_key(item) for item in held_out) == [view_key(row) for row in held_out_views.metadata]
    assert all(row["azimuth_index"] in (1, 5) and row["chair"] == "bench" for row in held_out.metadata)


def test_chairs_streaming_config(chairs_file, tmp_path):
    config = ChairsDataConfig(root=str(chairs_file), image_size=8, names=CHAIR_NAMES, holdout_every=3, streaming=True, shuffle_buffer=2)
    train, held_out = build_chair_datasets(config, seed=1)

    assert isinstance(train, ChairStream) and isinstance(held_out, ChairStream)
    assert len(train.metadata) + len(held_out.metadata) == 36
    assert len(held_out.metadata) == 3 * 2 * 2  # azimuth indices 0 and 3 of 0-5

    with pytest.raises(RecipeError, match="is a folder, but data.streaming = true reads a TFRecord file only"):
        build_chair_datasets(ChairsDataConfig(root=str(tmp_path), streaming=True), seed=0)


def test_chair_real_file_equals_random_access(chairs_dir):
    names = list_chair_folders(chairs_dir / "rendered_chairs")
    views = ChairViews(chairs_dir / "chairs.tfr", image_size=16, names=names, chairs=[1], cache=False)
    expected = {view_key(views[i]): views[i] for i in range(len(views))}
    streamed = list(ChairStream(chairs_dir / "chairs.tfr", image_size=16, names=names, chairs=[1]))

    assert len(streamed) == len(expected) == 62
    for item in streamed:
        assert torch.equal(item["image"], expected[view_key(item)]["image"])
        assert item["chair"] == names[1]
