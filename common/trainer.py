"""One training loop for every head: AdamW, clipping, a schedule, checkpoints and TensorBoard.

The trainer uses a domain only through its `DomainSpec` (datasets, batching,
media kind) and a head only through the `GeneratorModel` interface, so audio
and image models train the same way.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from condgen.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
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
    """Shuffle indices with a generator seeded by (seed, epoch), resumable at any position.

    The order of epoch `e` depends only on `seed` and `e`, so a resumed run
    gets the same batches as an uninterrupted one.
    """

    def __init__(self, n_items: int, seed: int):
        self.n_items = n_items
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch = epoch
        self.start = start

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_items, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch)[self.start :])

    def __len__(self) -> int:
        return self.n_items - self.start


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
    step: int
    run_dir: Path
    latest: Path
    best_loss: float


class Trainer:
    """Train the model that a recipe describes, writing everything under `recipe.run_dir`."""

    def __init__(self, recipe: Recipe, resume: str | Path | None = None, force: bool = False, show_progress: bool = True):
        self.recipe = recipe
        self.config = recipe.train
        self.run_dir = Path(recipe.run_dir)
        self.checkpoint_dir = self.run_dir / CHECKPOINT_DIR
        self.show_progress = show_progress
        self.domain: DomainSpec = get_domain(recipe.domain)
        self.device = pick_device(self.config.device)
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
        seed_everything(recipe.seed)
        self.train_set, self.val_set = self.domain.build_datasets(recipe.data, recipe.seed)
        self._check_label_names()
        if resume_checkpoint is not None:
            vocabularies = vocabularies_from_json(resume_checkpoint.meta["vocabularies"])
        else:
            vocabularies = build_vocabularies(recipe.conditioning.labels, self.train_set.metadata)
        self.model: GeneratorModel = build_model(recipe, vocabularies).to(self.device)
        n_parameters = sum(p.numel() for p in self.model.parameters())
        log.info("model: head %s, %.2f M parameters, device %s, %d CPU threads", recipe.head, n_parameters / 1e6, self.device, torch.get_num_threads())
        log.info("data: %d training items, %s validation items", len(self.train_set), len(self.val_set) if self.val_set is not None else "no")

        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, make_lr_lambda(self.config))
        self.step = 0
        self.epoch = 0
        self.epoch_position = 0
        self.best_loss = math.inf
        self.last_grad_norm = 0.0
        self.sampler = EpochSampler(len(self.train_set), recipe.seed)
        if resume_checkpoint is not None:
            self._restore(resume_checkpoint)

    # -- set-up -------------------------------------------------------------

    def _check_label_names(self) -> None:
        """Reject conditioning labels that the data items do not have, before any model is built."""
        available = set(self.train_set.metadata[0]) if len(self.train_set) else set()
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
        return checkpoint

    def _restore(self, checkpoint: Checkpoint) -> None:
        load_state(self.model, checkpoint.model_state, Path(self.recipe.run_dir))
        state = checkpoint.train_state
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        extra = state["extra"]
        self.step = checkpoint.meta["step"]
        self.epoch = extra["epoch"]
        self.epoch_position = extra["epoch_position"]
        self.best_loss = extra.get("best_loss", math.inf)
        rng = state["rng"]
        random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
        numpy_state = rng["numpy"]
        np.random.set_state((numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def _loader(self) -> DataLoader:
        batch_size = min(self.config.batch_size, len(self.train_set))
        return DataLoader(
            self.train_set,
            batch_size=batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=self.config.num_workers,
            collate_fn=self.domain.collate,
            # A private generator: creating an iterator would otherwise draw
            # from the global RNG, and a resumed run would drift from an
            # uninterrupted one.
            generator=torch.Generator(),
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
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
            "extra": {"epoch": self.epoch, "epoch_position": self.epoch_position, "best_loss": self.best_loss},
        }

    def save(self, smoothed_loss: float) -> Path:
        """Write the step checkpoint, prune old ones, and update `latest` and `best`."""
        checkpoint = Checkpoint(meta=self._meta(), model_state=self.model.state_dict(), train_state=self._train_state())
        step_path = self.checkpoint_dir / f"step_{self.step:08d}.safetensors"
        save_checkpoint(step_path, checkpoint)
        save_checkpoint(self.checkpoint_dir / LATEST, checkpoint)
        if smoothed_loss < self.best_loss:
            self.best_loss = smoothed_loss
            checkpoint.train_state["extra"]["best_loss"] = smoothed_loss
            save_checkpoint(self.checkpoint_dir / BEST, checkpoint)
        step_files = sorted(self.checkpoint_dir.glob("step_*.safetensors"))
        for old in step_files[: max(0, len(step_files) - self.config.keep_last)]:
            old.unlink()
        log.info("step %d: checkpoint written to %s", self.step, step_path)
        return step_path

    # -- the loop -----------------------------------------------------------

    def _batches(self) -> Iterator[tuple[dict[str, list], Any]]:
        """Yield batches forever, epoch after epoch, keeping track of the position for resuming."""
        loader = self._loader()
        while True:
            self.sampler.set_position(self.epoch, self.epoch_position)
            loader.generator.manual_seed(self.recipe.seed * 1_000_003 + self.epoch)
            for labels, target in loader:
                self.epoch_position += len(next(iter(labels.values())))
                yield labels, target
            self.epoch += 1
            self.epoch_position = 0

    def _sample_labels(self, n_items: int = 4) -> dict[str, list]:
        """Labels of the first few training items, used for the logged samples."""
        metadata = self.train_set.metadata[: min(n_items, len(self.train_set))]
        return {name: [item[name] for item in metadata] for name in self.model.conditioner.label_names}

    def fit(self) -> TrainResult:
        """Train until `train.steps` (or `train.max_minutes`), then write the final checkpoint."""
        from torch.utils.tensorboard import SummaryWriter

        if self.clear_previous_run:
            for folder in (self.checkpoint_dir, self.run_dir / "tensorboard"):
                if folder.is_dir():
                    log.info("--force: removing the previous run's %s", folder)
                    shutil.rmtree(folder)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "recipe.json").write_text(json.dumps(self.recipe.to_dict(), indent=2))
        writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=self.step or None)
        log.info("run folder %s; TensorBoard: tensorboard --logdir %s", self.run_dir, self.run_dir / "tensorboard")

        self.model.train()
        started = time.monotonic()
        window: list[float] = []
        smoothed = math.inf
        batches = self._batches()
        progress = tqdm(total=self.config.steps, initial=self.step, desc="train", unit="step", disable=not self.show_progress, dynamic_ncols=True)
        try:
            while self.step < self.config.steps:
                labels, target = next(batches)
                terms = self.train_step(labels, target)
                self.step += 1
                total = sum(terms.values())
                window.append(total)
                progress.update(1)
                progress.set_postfix(loss=f"{total:.4f}")

                if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                    smoothed = sum(window) / len(window)
                    window.clear()
                    for name, value in terms.items():
                        writer.add_scalar(f"loss/{name}", value, self.step)
                    writer.add_scalar("loss/total", smoothed, self.step)
                    writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
                    writer.add_scalar("train/grad_norm", self.last_grad_norm, self.step)
                    log.info("step %d: loss %.5f (%s), lr %.2e", self.step, smoothed, ", ".join(f"{k} {v:.4f}" for k, v in terms.items()), self.scheduler.get_last_lr()[0])

                if self.step % self.config.sample_every == 0 or self.step == self.config.steps:
                    self.log_samples(writer)
                if self.step % self.config.checkpoint_every == 0:
                    self.save(smoothed)
                if self.config.max_minutes and time.monotonic() - started > self.config.max_minutes * 60:
                    log.info("step %d: stopping after train.max_minutes = %g", self.step, self.config.max_minutes)
                    break
        finally:
            progress.close()
        if window:
            smoothed = sum(window) / len(window)
        if self.step % self.config.checkpoint_every != 0:
            self.save(smoothed)
        writer.close()
        elapsed = time.monotonic() - started
        log.info("training done: %d steps in %.1f s; latest checkpoint %s", self.step, elapsed, self.checkpoint_dir / LATEST)
        return TrainResult(step=self.step, run_dir=self.run_dir, latest=self.checkpoint_dir / LATEST, best_loss=self.best_loss)

    def train_step(self, labels: dict[str, list], target: torch.Tensor) -> dict[str, float]:
        inputs = self.model.conditioner.encode_values(labels, device=self.device)
        target = target.to(self.device, non_blocking=True)
        output = self.model(inputs)
        terms = self.model.loss_terms(output, target)
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            values = ", ".join(f"{name} {value.item():.4g}" for name, value in terms.items())
            raise TrainingError(
                f"step {self.step + 1}: the loss is not finite ({values}); the last good checkpoint is "
                f"{self.checkpoint_dir / LATEST}. Lower train.lr or train.grad_clip and resume with --resume"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.last_grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        return {name: value.item() for name, value in terms.items()}

    @torch.no_grad()
    def log_samples(self, writer) -> None:
        """Write generated samples for a few training labels to TensorBoard."""
        labels = self._sample_labels()
        self.model.eval()
        try:
            output = self.model(self.model.conditioner.encode_values(labels, device=self.device)).float().cpu()
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
