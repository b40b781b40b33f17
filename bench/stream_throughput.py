"""Throughput and memory of streaming an NSynth-schema TFRecord, against the `tfrecord` package.

Builds once, in `bench_out/`, a TFRecord of `--records` synthetic notes in the
official NSynth schema (64,000 float32 samples each, about 256 KB per record)
with the project's writer, plus its index. Reuses them when present. Then it
prints:

- the raw sequential read speed of the file (8 MiB `read` calls), the ceiling;
- records/s through a DataLoader (batch 16, the NSynth domain's collate) with 0 and 2
  workers, for `NSynthStream` and for `tfrecord.torch.TFRecordDataset`, each
  without and with the index, and the ratios ours/theirs;
- the same comparison, 0 workers, on the first `--python-protobuf-records`
  records, with the `tfrecord` package running on protobuf's pure-Python
  backend (`PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python`, set in a child
  process), which installs without the compiled `upb` backend fall back to;
- the time of the labels-only pass that builds `NSynthStream.metadata`;
- the peak memory while `NSynthStream` streams the file for `--epochs`
  epochs with a shuffle buffer of 1024 notes and 2 workers.

Without an index, every worker of `TFRecordDataset` reads the whole file, so
with 2 workers each record arrives twice. The table gives records delivered
and unique records per second, and the ratios use unique records.

The file is read right after being written or read, so it is served from the
page cache; the figures measure decoding, not the disk.

Usage:
    python bench/stream_throughput.py [--records 4096] [--epochs 3] [--skip-tfrecord]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from condgen.streaming import default_index_path, write_index
from condgen.synth.domain import collate_notes
from condgen.synth.nsynth import FAMILIES, N_SAMPLES, QUALITIES, SAMPLE_RATE, SOURCES, write_nsynth_tfrecord
from condgen.synth.stream import NSynthStream

BATCH_SIZE = 16
VELOCITIES = (25, 50, 75, 100, 127)
RAW_CHUNK_BYTES = 8 << 20
MEMORY_LIMIT_BYTES = 2 << 30


# ---------------------------------------------------------------------------
# The test file
# ---------------------------------------------------------------------------


def synthetic_notes(n_notes: int, seed: int = 0):
    """Yield `n_notes` notes with unique names and uniform noise audio in [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    for i in range(n_notes):
        instrument = i // (128 * len(VELOCITIES))
        pitch = i % 128
        velocity = VELOCITIES[(i // 128) % len(VELOCITIES)]
        family, source = FAMILIES[instrument % len(FAMILIES)], SOURCES[instrument % len(SOURCES)]
        instrument_str = f"{family}_{source}_{instrument:03d}"
        qualities = [int(bit) for bit in f"{i % 1024:010b}"]
        yield {
            "note": i,
            "note_str": f"{instrument_str}-{pitch:03d}-{velocity:03d}",
            "instrument": instrument,
            "instrument_str": instrument_str,
            "pitch": pitch,
            "velocity": velocity,
            "sample_rate": SAMPLE_RATE,
            "audio": rng.uniform(-0.5, 0.5, N_SAMPLES).astype(np.float32),
            "qualities": qualities,
            "qualities_str": [name for name, flag in zip(QUALITIES, qualities) if flag],
            "instrument_family": FAMILIES.index(family),
            "instrument_family_str": family,
            "instrument_source": SOURCES.index(source),
            "instrument_source_str": source,
        }


def build_files(out_dir: Path, n_records: int) -> tuple[Path, Path]:
    path = out_dir / f"nsynth-synthetic-{n_records}.tfrecord"
    index_path = default_index_path(path)
    if not path.exists():
        started = time.perf_counter()
        write_nsynth_tfrecord(path, synthetic_notes(n_records))
        print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.1f} s")
    if not index_path.exists():
        write_index(path, index_path)
    return path, index_path


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


def raw_read(path: Path) -> tuple[float, float]:
    """Return (seconds, bytes) of reading the whole file in big chunks, without parsing."""
    started = time.perf_counter()
    n_bytes = 0
    with open(path, "rb", buffering=0) as file:
        while chunk := file.read(RAW_CHUNK_BYTES):
            n_bytes += len(chunk)
    return time.perf_counter() - started, n_bytes


def time_loader(dataset, n_workers: int, name_key: str) -> tuple[float, int, int]:
    """Return (seconds, records delivered, unique records) of one epoch through a DataLoader.

    Both readers' items go through the NSynth domain's collate, which the
    trainer uses: the audio is stacked into `[B, N_SAMPLES]` and the labels
    are kept as lists.
    """
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, num_workers=n_workers, collate_fn=collate_notes)
    names: set = set()
    delivered = 0
    started = time.perf_counter()
    for labels, audio in loader:
        batch_names = labels[name_key]
        delivered += len(batch_names)
        names.update(batch_names)
    return time.perf_counter() - started, delivered, len(names)


def process_tree(pid: int) -> list[int]:
    """Return `pid` and the ids of the children that its main thread started (the DataLoader workers)."""
    try:
        return [pid] + [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return [pid]


def summed_rss_bytes(pids: list[int]) -> int:
    """Return the summed resident set size from /proc/PID/statm, which is cheap to read (Linux)."""
    page_bytes = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page_bytes
        except OSError:
            continue  # a worker that exited between the listing and the read
    return total


def summed_pss_bytes(pids: list[int]) -> int:
    """Return the summed proportional set size from /proc/PID/smaps_rollup (Linux).

    Reading it walks the page tables of the process and stalls its page
    faults meanwhile, so it is sampled less often than the RSS.
    """
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class MemorySampler(threading.Thread):
    """Sample the memory of this process and its DataLoader workers: RSS every 50 ms, PSS every 0.5 s."""

    def __init__(self, interval_s: float = 0.05, pss_every: int = 10):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.pss_every = pss_every
        self.peak_rss = 0
        self.peak_pss = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        n_samples = 0
        while not self.stopped.is_set():
            pids = process_tree(os.getpid())
            self.peak_rss = max(self.peak_rss, summed_rss_bytes(pids))
            if n_samples % self.pss_every == 0:
                self.peak_pss = max(self.peak_pss, summed_pss_bytes(pids))
            n_samples += 1
            self.stopped.wait(self.interval_s)


def stream_epochs_memory(path: Path, index_path: Path, epochs: int, shuffle_buffer: int, n_workers: int) -> dict:
    """Stream the file for `epochs` epochs in a fresh process and return its time and peak memory.

    A fresh process keeps the memory that this one used for the throughput
    runs out of the figures. Its workers fork from it, as under the trainer.
    """
    # A Pool's processes are daemons, which may not start DataLoader workers.
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_stream_epochs_memory, args=(results, path, index_path, epochs, shuffle_buffer, n_workers))
    process.start()
    result = results.get()
    process.join()
    return result


def _stream_epochs_memory(results, path: Path, index_path: Path, epochs: int, shuffle_buffer: int, n_workers: int) -> None:
    torch.set_num_threads(1)
    stream = NSynthStream(path, shuffle_buffer=shuffle_buffer, seed=0, index_paths=[index_path])
    sampler = MemorySampler()
    sampler.start()
    started = time.perf_counter()
    delivered = 0
    for epoch in range(epochs):
        stream.set_epoch(epoch)
        # A spawned process starts its own children with spawn too; fork them, as Linux does by default.
        loader = DataLoader(stream, batch_size=BATCH_SIZE, num_workers=n_workers, collate_fn=collate_notes, multiprocessing_context="fork")
        for labels, audio in loader:
            delivered += len(labels["note_str"])
    seconds = time.perf_counter() - started
    sampler.stopped.set()
    sampler.join()
    # ru_maxrss is in KiB on Linux. For children it is the largest single child, not a sum.
    results.put({
        "seconds": seconds,
        "delivered": delivered,
        "peak_rss_sum": sampler.peak_rss,
        "peak_pss_sum": sampler.peak_pss,
        "maxrss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "maxrss_children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    })


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def python_protobuf_rate(path: Path, n_records: int) -> float:
    """Records/s of the `tfrecord` package on protobuf's pure-Python backend, measured in a child process."""
    code = (
        "import sys, time, itertools\n"
        "from google.protobuf.internal import api_implementation\n"
        "assert api_implementation.Type() == 'python', api_implementation.Type()\n"
        "from tfrecord.torch.dataset import TFRecordDataset\n"
        "from torch.utils.data import DataLoader\n"
        "from condgen.synth.domain import collate_notes\n"
        f"n = {max(1, n_records // BATCH_SIZE)}\n"
        f"loader = DataLoader(TFRecordDataset({str(path)!r}, None), batch_size={BATCH_SIZE}, num_workers=0, collate_fn=collate_notes)\n"
        "started = time.perf_counter()\n"
        "for _ in itertools.islice(loader, n): pass\n"
        f"print(n * {BATCH_SIZE} / (time.perf_counter() - started))\n"
    )
    environment = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=4096, help="notes in the test file (default 4096, about 1 GB)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs streamed for the memory measurement")
    parser.add_argument("--skip-tfrecord", action="store_true", help="do not measure the tfrecord package")
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="folder of the test file and its index")
    parser.add_argument("--python-protobuf-records", type=int, default=64, help="records read in the pure-Python protobuf comparison; 0 skips it (default 64)")
    parser.add_argument("--shuffle-buffer", type=int, default=1024, help="shuffle buffer of the memory measurement, in notes")
    args = parser.parse_args()
    torch.set_num_threads(1)

    args.out.mkdir(parents=True, exist_ok=True)
    path, index_path = build_files(args.out, args.records)
    size = path.stat().st_size
    record_bytes = size / args.records
    print(f"file {path}: {args.records} records, {size / 1e9:.3f} GB, {record_bytes / 1e3:.1f} kB per record")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, batch {BATCH_SIZE}, page-cached file")

    raw_read(path)  # bring the file into the page cache
    seconds, n_bytes = raw_read(path)
    raw_rate = n_bytes / seconds / record_bytes
    print(f"\nraw sequential read: {n_bytes / seconds / 1e6:.0f} MB/s = {raw_rate:.0f} records/s (ceiling)")

    # Each worker count and index setting, ours and theirs.
    rows = []
    for n_workers in (0, 2):
        for indexed in (False, True):
            stream = NSynthStream(path, index_paths=[index_path] if indexed else None)
            rows.append(("ours", n_workers, indexed, *time_loader(stream, n_workers, "note_str")))
            if args.skip_tfrecord:
                continue
            from tfrecord.torch.dataset import TFRecordDataset

            theirs = TFRecordDataset(str(path), str(index_path) if indexed else None)
            rows.append(("tfrecord", n_workers, indexed, *time_loader(theirs, n_workers, "note_str")))

    print(f"\n{'reader':<9} {'workers':>7} {'index':>5} {'seconds':>8} {'delivered':>9} {'unique':>6} {'records/s':>9} {'unique/s':>9} {'of raw':>6}")
    unique_rates = {}
    for reader, n_workers, indexed, seconds, delivered, unique in rows:
        unique_rates[(reader, n_workers, indexed)] = unique / seconds
        print(
            f"{reader:<9} {n_workers:>7} {'yes' if indexed else 'no':>5} {seconds:>8.2f} {delivered:>9} {unique:>6} "
            f"{delivered / seconds:>9.0f} {unique / seconds:>9.0f} {unique / seconds / raw_rate:>6.0%}"
        )
    if not args.skip_tfrecord:
        print("\nours / tfrecord (unique records per second; target at least 10x):")
        for n_workers in (0, 2):
            for indexed in (False, True):
                ratio = unique_rates[("ours", n_workers, indexed)] / unique_rates[("tfrecord", n_workers, indexed)]
                print(f"  {n_workers} workers, {'with' if indexed else 'without'} index: {ratio:.1f}x")

    if not args.skip_tfrecord and args.python_protobuf_records:
        n_records = args.python_protobuf_records
        # Ours from the table above (0 workers, no index, the whole file).
        ours_rate = unique_rates[("ours", 0, False)]
        theirs_rate = python_protobuf_rate(path, n_records)
        print(f"\n0 workers, no index, tfrecord on pure-Python protobuf (first {n_records} records): ours {ours_rate:.0f} records/s, tfrecord {theirs_rate:.1f} records/s, ratio {ours_rate / theirs_rate:.0f}x")

    # The labels pass, uncached.
    with tempfile.TemporaryDirectory() as cache_dir:
        os.environ["CONDGEN_CACHE_DIR"] = cache_dir
        started = time.perf_counter()
        n_labels = len(NSynthStream(path).metadata)
        seconds = time.perf_counter() - started
        print(f"\nlabels pass (metadata, no cache): {n_labels} records in {seconds:.2f} s = {n_labels / seconds:.0f} records/s")
        started = time.perf_counter()
        NSynthStream(path).metadata
        print(f"labels from the JSON cache: {time.perf_counter() - started:.3f} s")

    memory = stream_epochs_memory(path, index_path, args.epochs, args.shuffle_buffer, n_workers=2)
    print(
        f"\nmemory, {args.epochs} epochs with 2 workers and shuffle_buffer {args.shuffle_buffer}: "
        f"{memory['delivered']} records in {memory['seconds']:.1f} s"
    )
    print(f"  getrusage max RSS: main process {memory['maxrss_self'] / 2**30:.2f} GiB, largest worker {memory['maxrss_children'] / 2**30:.2f} GiB")
    print(f"  peak RSS summed over the main process and workers: {memory['peak_rss_sum'] / 2**30:.2f} GiB (counts pages shared since the fork once per process)")
    print(f"  peak PSS summed over the main process and workers: {memory['peak_pss_sum'] / 2**30:.2f} GiB (shared pages split between the processes)")
    verdict = "under" if memory["peak_rss_sum"] < MEMORY_LIMIT_BYTES else "over"
    print(f"  the summed RSS is {verdict} the 2 GiB limit")


if __name__ == "__main__":
    main()
