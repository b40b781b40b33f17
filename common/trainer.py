"""One training loop for every head: AdamW, clipping, a schedule, checkpoints and TensorBoard.

The trainer uses a domain only through its `DomainSpec` (datasets, batching,
media kind) and a head only through the `GeneratorModel` interface, so audio
and image models train the same way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler
from tqdm import tqdm

from condgen.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, write_bytes_atomic
from condgen import distributed
from condgen.conditioning import build_vocabularies, vocabularies_from_json
from condgen.errors import CheckpointError, CondgenError, OutputExistsError, RecipeError
from condgen.model import GeneratorModel, build_model, load_state
from condgen.recipe import Recipe, TrainConfig
from condgen.registry import DomainSpec, get_domain

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.safetensors"
BEST = "best.safetensors"


class TrainingError(CondgenError):
    """Training cannot go on (e.g. a loss that is not finite)."""


class EpochSampler(Sampler[int]):
    """Shuffle indices with a generator seeded by (seed, epoch), resumable at any batch.

    The order of epoch `e` depends only on `seed` and `e`, so a resumed run
    gets the same batches as an uninterrupted one. Each global batch of
    `global_batch` consecutive indices of that order is split between the
    `world_size` ranks, `global_batch / world_size` each, so N processes see
    disjoint items and together the same batches as one process. Items
    after the last whole global batch are dropped.
    """

    def __init__(self, n_items: int, seed: int, global_batch: int, rank: int = 0, world_size: int = 1):
        self.n_items = n_items
        self.seed = seed
        self.global_batch = global_batch
        self.rank = rank
        self.world_size = world_size
        self.per_rank = global_batch // world_size
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Start at item `start` of epoch `epoch`; `start` counts items of all ranks."""
        self.epoch = epoch
        self.start = start

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_items, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.order(self.epoch)
        for batch in range(self.start // self.global_batch, self.n_items // self.global_batch):
            first = batch * self.global_batch + self.rank * self.per_rank
            yield from order[first : first + self.per_rank]

    def __len__(self) -> int:
        return max(0, self.n_items // self.global_batch - self.start // self.global_batch) * self.per_rank


class StopRequest:
    """Turn the first SIGINT or SIGTERM into a request to save and stop after the current step.

    A second signal raises KeyboardInterrupt at once. Handlers can only be
    installed from the main thread; elsewhere the signals keep their defaults.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_number = 0
        self._previous: dict[int, Any] = {}

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signal_number).name if self.signal_number else ""

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for number in self.SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame) -> None:
        if self.signal_number:
            raise KeyboardInterrupt
        self.signal_number = number
        log.warning("%s received: saving a checkpoint after the current step, then stopping (send it again to stop at once without saving)", signal.Signals(number).name)


def _exit_quietly(signal_number: int, frame) -> None:
    os._exit(0)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: leave SIGINT to the main process, and exit quietly on SIGTERM.

    A Ctrl-C or a `kill` of the process group reaches the workers too. A
    worker that ignores SIGINT keeps serving while the main process finishes
    its step and writes the checkpoint. A worker cannot ignore SIGTERM,
    because the DataLoader's shutdown and Python's exit stop workers with it.
    So it exits with status 0 instead. torch raises in the main process only
    for a worker that fails or is killed, and the main process needs no more
    batches once it has been asked to stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_quietly)


def pick_device(name: str, option: str = "train.device") -> torch.device:
    """Resolve `auto` to CUDA when available, else the CPU; reject unknown names and CUDA when there is none.

    `option` names the setting in error messages.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", name):
        raise CondgenError(f"{option} {name!r} is invalid; use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CondgenError(f"{option} is {name!r} but CUDA is not available here; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_lr_lambda(config: TrainConfig):
    """Return the learning-rate multiplier as a function of the step."""

    def multiplier(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        if config.schedule == "exponential":
            return config.decay_rate ** ((step - config.warmup_steps) / config.decay_steps)
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier


@dataclass
class TrainResult:
    """The outcome of `Trainer.fit`. `stop_signal` names the signal (e.g. "SIGINT") that stopped training early, if any."""

    step: int
    run_dir: Path
    latest: Path
    best_loss: float
    stop_signal: str = ""
    signal_number: int = 0


class Trainer:
    """Train the model that a recipe describes, writing everything under `recipe.run_dir`.

    Under torchrun the model is wrapped in DistributedDataParallel, each rank
    reads its share of every global batch, and rank 0 alone writes
    checkpoints, `recipe.json` and TensorBoard events.
    """

    def __init__(self, recipe: Recipe, resume: str | Path | None = None, force: bool = False, show_progress: bool = True):
        self.recipe = recipe
        self.config = recipe.train
        self.run_dir = Path(recipe.run_dir)
        self.checkpoint_dir = self.run_dir / CHECKPOINT_DIR
        self.domain: DomainSpec = get_domain(recipe.domain)
        self.dist = distributed.context_from_env()
        self.show_progress = show_progress and self.dist.is_main
        self.device = distributed.setup(self.dist, pick_device(self.config.device))
        if self.config.threads:
            torch.set_num_threads(self.config.threads)

        resume_checkpoint = self._find_resume(resume)
        if resume_checkpoint is None and (self.checkpoint_dir / LATEST).exists() and not force:
            raise OutputExistsError(
                f"{self.run_dir} already contains a training run; pass --resume to continue it, "
                f"--force to start again and overwrite its checkpoints, or set run_dir=... to a new folder"
            )

        # With --force, a new run replaces the old one's checkpoints and
        # TensorBoard events; they are removed when training starts.
        self.clear_previous_run = resume_checkpoint is None and force
        # A run that fails before its first step removes the folder it made,
        # so that bad data leaves nothing behind (checked before the command
        # line starts train.log there).
        self.created_run_dir = not self.run_dir.exists()
        seed_everything(recipe.seed)
        self.train_set, self.val_set = self.domain.build_datasets(recipe.data, recipe.seed)
        self.streaming = isinstance(self.train_set, IterableDataset)
        self.n_items = len(self.train_set.metadata)
        self._check_label_names()
        self.global_batch = min(self.config.batch_size, self.n_items)
        if self.global_batch % self.dist.world_size:
            raise RecipeError(
                f"train.batch_size {self.global_batch} is the global batch and must be divisible by the "
                f"{self.dist.world_size} processes; set it to a multiple of {self.dist.world_size}"
            )
        if resume_checkpoint is not None:
            vocabularies = vocabularies_from_json(resume_checkpoint.meta["vocabularies"])
        else:
            vocabularies = build_vocabularies(recipe.conditioning.labels, self.train_set.metadata)
        # Every rank builds the model from the same seed; DDP also broadcasts
        # rank 0's weights when it wraps the model.
        self.model: GeneratorModel = build_model(recipe, vocabularies).to(self.device)
        self.network: torch.nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=device_ids)
            # Random heads (e.g. DDSP noise) must not draw the same noise on every rank.
            torch.manual_seed(recipe.seed + 7919 * self.dist.rank)
        n_parameters = sum(p.numel() for p in self.model.parameters())
        log.info("model: head %s, %.2f M parameters, device %s, %d CPU threads", recipe.head, n_parameters / 1e6, self.device, torch.get_num_threads())
        log.info("data: %d training items%s, %s validation items", self.n_items, " (streamed)" if self.streaming else "", len(self.val_set.metadata) if self.val_set is not None else "no")

        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, make_lr_lambda(self.config))
        self.step = 0
        self.epoch = 0
        self.epoch_position = 0
        self.best_loss = math.inf
        self.skipped_steps = 0
        self.last_grad_norm = 0.0
        self.stop_request = StopRequest()
        self.sampler = EpochSampler(self.n_items, recipe.seed, self.global_batch, self.dist.rank, self.dist.world_size)
        if resume_checkpoint is not None:
            self._restore(resume_checkpoint)

    # -- set-up -------------------------------------------------------------

    def _check_label_names(self) -> None:
        """Reject conditioning labels that the data items do not have, before any model is built."""
        available = set(self.train_set.metadata[0]) if self.n_items else set()
        missing = [spec.name for spec in self.recipe.conditioning.labels if spec.name not in available]
        if missing:
            raise RecipeError(
                f"conditioning label(s) {', '.join(missing)} are not in the {self.recipe.domain} data; "
                f"its items provide {', '.join(sorted(available))}"
            )

    def _find_resume(self, resume: str | Path | None) -> Checkpoint | None:
        if resume is None:
            return None
        path = Path(resume) if str(resume) not in ("", "latest") else self.checkpoint_dir / LATEST
        if not path.exists():
            raise CheckpointError(f"cannot resume: checkpoint {path} not found; train without --resume to start a new run")
        checkpoint = load_checkpoint(path)
        if not checkpoint.train_state:
            raise CheckpointError(f"cannot resume from {path}: it contains no optimizer state (an inference-only checkpoint)")
        stored = checkpoint.meta.get("recipe", {})
        if stored.get("head") != self.recipe.head or stored.get("domain") != self.recipe.domain:
            raise CheckpointError(f"cannot resume from {path}: it is a {stored.get('domain')}/{stored.get('head')} run, the recipe is {self.recipe.domain}/{self.recipe.head}")
        log.info("resuming from %s at step %d", path, checkpoint.meta["step"])
        self.resume_path = path
        return checkpoint

    def _restore(self, checkpoint: Checkpoint) -> None:
        load_state(self.model, checkpoint.model_state, self.resume_path)
        state = checkpoint.train_state
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        extra = state["extra"]
        self.step = checkpoint.meta["step"]
        self.epoch = extra["epoch"]
        self.epoch_position = extra["epoch_position"]
        self.best_loss = extra.get("best_loss", math.inf)
        self.skipped_steps = extra.get("skipped_steps", 0)
        rng = state["rng"]
        random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
        numpy_state = rng["numpy"]
        np.random.set_state((numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if self.dist.enabled and self.dist.rank:
            # The checkpoint stores rank 0's RNG states only.
            # NOTE: so a resumed multi-process run of a head that draws noise
            # is not bit-exact; single-process resume is.
            torch.manual_seed(self.recipe.seed + 7919 * self.dist.rank + self.step)

    def _loader(self) -> DataLoader:
        per_rank = self.global_batch // self.dist.world_size
        options: dict[str, Any] = {}
        if not self.streaming:
            options["sampler"] = self.sampler
        return DataLoader(
            self.train_set,
            batch_size=per_rank,
            drop_last=True,
            num_workers=self.config.num_workers,
            collate_fn=self.domain.collate,
            # A private generator: creating an iterator would otherwise draw
            # from the global RNG, and a resumed run would drift from an
            # uninterrupted one.
            generator=torch.Generator(),
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=ignore_stop_signals if self.config.num_workers else None,
            **options,
        )

    # -- checkpoints --------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {
            "domain": self.recipe.domain,
            "head": self.recipe.head,
            "media": self.domain.media,
            "step": self.step,
            "recipe": self.recipe.to_dict(),
            "vocabularies": self.model.conditioner.vocabulary_json(),
            "head_meta": self.model.extra_meta(),
        }

    def _train_state(self) -> dict[str, Any]:
        numpy_state = np.random.get_state()
        python_state = random.getstate()
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {
                "python": [python_state[0], list(python_state[1]), python_state[2]],
                "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "extra": {
                "epoch": self.epoch,
                "epoch_position": self.epoch_position,
                "best_loss": self.best_loss,
                "skipped_steps": self.skipped_steps,
            },
        }

    def save(self, smoothed_loss: float) -> Path:
        """Write the step checkpoint, prune old ones, and update `latest` and `best` (rank 0 only).

        Every file is written under a temporary name and renamed, so a crash
        or a full disk leaves the previous checkpoints as they were.
        """
        step_path = self.checkpoint_dir / f"step_{self.step:08d}.safetensors"
        if self.dist.is_main:
            checkpoint = Checkpoint(meta=self._meta(), model_state=self.model.state_dict(), train_state=self._train_state())
            try:
                save_checkpoint(step_path, checkpoint)
                save_checkpoint(self.checkpoint_dir / LATEST, checkpoint)
                if smoothed_loss < self.best_loss:
                    self.best_loss = smoothed_loss
                    checkpoint.train_state["extra"]["best_loss"] = smoothed_loss
                    save_checkpoint(self.checkpoint_dir / BEST, checkpoint)
            except OSError as error:
                reason = error.strerror or str(error)
                raise CheckpointError(
                    f"step {self.step}: writing a checkpoint to {self.checkpoint_dir} failed ({reason}); "
                    f"the checkpoints written before are intact. Free disk space (or set run_dir=... on "
                    f"another disk) and continue with --resume"
                ) from None
            step_files = sorted(self.checkpoint_dir.glob("step_*.safetensors"))
            for old in step_files[: max(0, len(step_files) - self.config.keep_last)]:
                old.unlink()
            log.info("step %d: checkpoint written to %s", self.step, step_path)
        # The other ranks wait here, so that no rank reads a checkpoint before it exists.
        distributed.barrier(self.dist)
        return step_path

    # -- the loop -----------------------------------------------------------

    def _batches(self) -> Iterator[tuple[dict[str, list], Any]]:
        """Yield batches forever, epoch after epoch, keeping track of the position for resuming.

        `epoch_position` counts the items of all ranks that this epoch has
        used. A streamed dataset cannot seek, so on resume its first batches
        are read and dropped.
        """
        loader = self._loader()
        while True:
            loader.generator.manual_seed(self.recipe.seed * 1_000_003 + self.epoch)
            if self.streaming:
                self.train_set.set_epoch(self.epoch)
                to_skip = self.epoch_position // self.global_batch
            else:
                self.sampler.set_position(self.epoch, self.epoch_position)
                to_skip = 0
            for labels, target in loader:
                if to_skip:
                    to_skip -= 1
                    continue
                self.epoch_position += self.global_batch
                yield labels, target
            if self.epoch_position == 0:
                raise TrainingError(
                    f"epoch {self.epoch} yielded no whole batch of {self.global_batch} items; "
                    f"lower train.batch_size or add data"
                )
            self.epoch += 1
            self.epoch_position = 0

    def _sample_labels(self, n_items: int = 4) -> dict[str, list]:
        """Labels of the first few training items, used for the logged samples."""
        metadata = self.train_set.metadata[: min(n_items, self.n_items)]
        return {name: [item[name] for item in metadata] for name in self.model.conditioner.label_names}

    def _start_run_folder(self):
        """Clear a replaced run, write recipe.json and open the TensorBoard writer (rank 0; None elsewhere)."""
        if not self.dist.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        if self.clear_previous_run:
            for folder in (self.checkpoint_dir, self.run_dir / "tensorboard"):
                if folder.is_dir():
                    log.info("--force: removing the previous run's %s", folder)
                    shutil.rmtree(folder)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.run_dir / "recipe.json", json.dumps(self.recipe.to_dict(), indent=2).encode("utf-8"))
        log.info("run folder %s; TensorBoard: tensorboard --logdir %s", self.run_dir, self.run_dir / "tensorboard")
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=self.step or None)

    def fit(self) -> TrainResult:
        """Train until `train.steps` (or `train.max_minutes`, or SIGINT/SIGTERM), then write the final checkpoint.

        When an error stops a new run before its first step is done (bad data
        in the first batch, say), the run folder that this run created is
        removed again.
        """
        first_step = self.step
        try:
            return self._fit()
        except BaseException:
            if self.created_run_dir and self.step == first_step and self.dist.is_main and self.run_dir.is_dir():
                log.info("removing %s: the run failed before its first step", self.run_dir)
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    def _fit(self) -> TrainResult:
        writer = self._start_run_folder()
        distributed.barrier(self.dist)
        self.model.train()
        started = time.monotonic()
        window: list[float] = []
        smoothed = math.inf
        batches = self._batches()
        progress = tqdm(total=self.config.steps, initial=self.step, desc="train", unit="step", disable=not self.show_progress, dynamic_ncols=True)
        self.stop_request.install()
        try:
            while self.step < self.config.steps:
                time_up = bool(self.config.max_minutes) and time.monotonic() - started > self.config.max_minutes * 60
                signalled, time_up = distributed.max_across_ranks(self.dist, [self.stop_request.signal_number, float(time_up)], self.device)
                if signalled:
                    self.stop_request.signal_number = self.stop_request.signal_number or int(signalled)
                    break
                if time_up:
                    log.info("step %d: stopping after train.max_minutes = %g", self.step, self.config.max_minutes)
                    break
                try:
                    labels, target = next(batches)
                except Exception:
                    # Ctrl-C also reaches DataLoader workers, whose exit then
                    # breaks the loader; the requested checkpoint is still written.
                    if self.stop_request.signal_number:
                        break
                    raise
                terms = self.train_step(labels, target)
                self.step += 1
                progress.update(1)
                if terms is not None:
                    total = sum(terms.values())
                    window.append(total)
                    progress.set_postfix(loss=f"{total:.4f}")

                log_now = self.step % self.config.log_every == 0 or self.step == self.config.steps
                if log_now and terms is not None and window:
                    smoothed = sum(window) / len(window)
                    window.clear()
                    if writer is not None:
                        self._log_scalars(writer, terms, smoothed)
                if writer is not None and (self.step % self.config.sample_every == 0 or self.step == self.config.steps):
                    self.log_samples(writer)
                if self.step % self.config.checkpoint_every == 0:
                    self.save(smoothed)
        finally:
            self.stop_request.restore()
            progress.close()
            # Shut the DataLoader workers down now, not at garbage collection.
            batches.close()
        if window:
            smoothed = sum(window) / len(window)
        if self.step % self.config.checkpoint_every != 0 or self.stop_request.signal_number:
            self.save(smoothed)
        if writer is not None:
            writer.close()
        elapsed = time.monotonic() - started
        latest = self.checkpoint_dir / LATEST
        if self.stop_request.signal_number:
            log.warning("training stopped by %s at step %d of %d; checkpoint %s", self.stop_request.signal_name, self.step, self.config.steps, latest)
        else:
            log.info("training done: %d steps in %.1f s; latest checkpoint %s", self.step, elapsed, latest)
        distributed.teardown(self.dist)
        return TrainResult(
            step=self.step,
            run_dir=self.run_dir,
            latest=latest,
            best_loss=self.best_loss,
            stop_signal=self.stop_request.signal_name,
            signal_number=self.stop_request.signal_number,
        )

    def _log_scalars(self, writer, terms: dict[str, float], smoothed: float) -> None:
        for name, value in terms.items():
            writer.add_scalar(f"loss/{name}", value, self.step)
        writer.add_scalar("loss/total", smoothed, self.step)
        writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
        writer.add_scalar("train/grad_norm", self.last_grad_norm, self.step)
        if self.skipped_steps:
            writer.add_scalar("train/skipped_steps", self.skipped_steps, self.step)
        log.info("step %d: loss %.5f (%s), lr %.2e", self.step, smoothed, ", ".join(f"{k} {v:.4f}" for k, v in terms.items()), self.scheduler.get_last_lr()[0])

    def _skip_or_stop(self, what: str, details: str) -> None:
        """Count a step with a non-finite loss or gradient as skipped, or raise when the recipe allows no more."""
        step = self.step + 1
        if self.skipped_steps >= self.config.max_skipped_steps:
            allowance = f"train.max_skipped_steps = {self.config.max_skipped_steps} allows no more skipped steps"
            raise TrainingError(
                f"step {step}: the {what} is not finite ({details}); {allowance}. The last good checkpoint is "
                f"{self.checkpoint_dir / LATEST}. Lower train.lr or train.grad_clip and resume with --resume"
            )
        self.skipped_steps += 1
        log.warning(
            "step %d: the %s is not finite (%s); step skipped without updating the weights (%d of train.max_skipped_steps = %d)",
            step, what, details, self.skipped_steps, self.config.max_skipped_steps,
        )

    def train_step(self, labels: dict[str, list], target: torch.Tensor) -> dict[str, float] | None:
        """One optimisation step; returns the loss terms, or None when the step was skipped."""
        inputs = self.model.conditioner.encode_values(labels, device=self.device)
        target = target.to(self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"):
            output = self.network(inputs)
        terms = self.model.loss_terms(output.float(), target)
        loss = sum(terms.values())
        # Every rank must take the same decision, or the others would wait
        # forever in the gradient all-reduce.
        (not_finite,) = distributed.max_across_ranks(self.dist, [float(not torch.isfinite(loss))], self.device)
        if not_finite:
            self._skip_or_stop("loss", ", ".join(f"{name} {value.item():.4g}" for name, value in terms.items()))
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            return None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if not torch.isfinite(grad_norm):
            self._skip_or_stop("gradient norm", f"{float(grad_norm)}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            return None
        self.last_grad_norm = float(grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return {name: value.item() for name, value in terms.items()}

    @torch.no_grad()
    def log_samples(self, writer) -> None:
        """Write generated samples for a few training labels to TensorBoard."""
        labels = self._sample_labels()
        self.model.eval()
        try:
            output = self.model.render(self.model(self.model.conditioner.encode_values(labels, device=self.device))).float().cpu()
        finally:
            self.model.train()
        captions = [" ".join(str(labels[name][i]) for name in labels) for i in range(output.shape[0])]
        for i, caption in enumerate(captions):
            tag = f"samples/{i}"
            if self.domain.media == "audio":
                sample_rate = self.model.extra_meta()["sample_rate"]
                writer.add_audio(tag, output[i].clamp(-1, 1).unsqueeze(0), self.step, sample_rate=sample_rate)
                writer.add_text(f"{tag}/labels", caption, self.step)
            else:
                writer.add_image(tag, output[i].clamp(0, 1), self.step)
                writer.add_text(f"{tag}/labels", caption, self.step)
