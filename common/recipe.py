"""Training recipes: TOML files checked strictly against dataclasses.

A recipe names a domain (its data reader) and a head (its model), and contains
one table per part: `[data]`, `[conditioning]`, `[model]` and `[train]`. The
domain and head registries supply the dataclasses for `[data]` and `[model]`,
so every key is known and typed. Unknown keys, wrong types and bad values are
rejected by name, both in the file and in `key=value` overrides from the
command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from condgen.conditioning import ConditioningConfig
from condgen.errors import RecipeError

SCHEDULES = ("constant", "cosine", "exponential")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Optimisation, logging and checkpoint settings shared by every head.

    The learning rate warms up linearly over `warmup_steps`, then follows
    `schedule`: `cosine` decays to `lr * min_lr_ratio` at `steps`, and
    `exponential` multiplies it by `decay_rate` every `decay_steps`.
    `threads` sets torch's intra-op CPU threads (0 keeps torch's default), and
    `max_minutes` stops training after that wall-clock time (0: no limit).

    `batch_size` is the global batch: under torchrun each of the N processes
    takes `batch_size / N` items per step, so the recipe trains the same way on
    any number of processes. `precision = "bf16"` runs the forward pass under
    bfloat16 autocast (meant for CUDA; it also runs, slowly, on the CPU).
    A step whose loss or gradient is not finite stops the run, unless
    `max_skipped_steps` allows that many such steps to be skipped without
    updating the weights.
    """

    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.0
    grad_clip: float = 3.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    decay_rate: float = 0.98
    decay_steps: int = 1000
    log_every: int = 10
    sample_every: int = 200
    checkpoint_every: int = 500
    keep_last: int = 3
    num_workers: int = 0
    threads: int = 0
    device: str = "auto"
    max_minutes: float = 0.0
    precision: str = "fp32"
    max_skipped_steps: int = 0

    def __post_init__(self) -> None:
        positive_ints = ("steps", "batch_size", "log_every", "sample_every", "checkpoint_every", "decay_steps")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise RecipeError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "keep_last", "num_workers", "threads", "max_skipped_steps"):
            if getattr(self, name) < 0:
                raise RecipeError(f"train.{name} must be 0 or more, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise RecipeError(f"train.lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise RecipeError(f"train.weight_decay must be 0 or more, got {self.weight_decay}")
        if not self.grad_clip > 0:
            raise RecipeError(f"train.grad_clip must be positive, got {self.grad_clip}")
        if self.schedule not in SCHEDULES:
            raise RecipeError(f"train.schedule {self.schedule!r} is invalid; use one of {', '.join(SCHEDULES)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise RecipeError(f"train.min_lr_ratio must be within [0, 1], got {self.min_lr_ratio}")
        if not 0 < self.decay_rate <= 1:
            raise RecipeError(f"train.decay_rate must be within (0, 1], got {self.decay_rate}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise RecipeError(f"train.device {self.device!r} is invalid; use auto, cpu, cuda or cuda:N")
        if self.max_minutes < 0:
            raise RecipeError(f"train.max_minutes must be 0 (no limit) or more, got {self.max_minutes}")
        if self.precision not in PRECISIONS:
            raise RecipeError(f"train.precision {self.precision!r} is invalid; use one of {', '.join(PRECISIONS)}")


@dataclass
class Recipe:
    """A whole recipe. `data` and `model` are the domain's and head's own dataclasses."""

    domain: str
    head: str
    run_dir: str
    data: Any
    conditioning: ConditioningConfig
    model: Any
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe file, apply `key=value` overrides, and check every key and type."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} not found; pass a TOML file such as recipes/nsynth_ddsp.toml")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise RecipeError(f"recipe {path} is not valid TOML: {error}") from None
    for override in overrides:
        apply_override(raw, override)
    return recipe_from_dict(raw, source=str(path))


def recipe_from_dict(raw: Mapping[str, Any], source: str = "recipe") -> Recipe:
    """Build a `Recipe` from plain data (a parsed TOML file or a checkpoint's stored copy)."""
    from condgen.registry import get_domain, get_head

    raw = dict(raw)
    for key in ("domain", "head", "run_dir"):
        if key not in raw:
            raise RecipeError(f"{source}: missing top-level key {key!r}")
    domain = get_domain(_expect(raw["domain"], str, "domain"))
    head = get_head(_expect(raw["head"], str, "head"))
    if head.domain != domain.name:
        raise RecipeError(f"{source}: head {head.name!r} is for domain {head.domain!r}, not {domain.name!r}")
    sections = {
        "data": domain.config_class,
        "conditioning": ConditioningConfig,
        "model": head.config_class,
        "train": TrainConfig,
    }
    known = {"domain", "head", "run_dir", "seed", *sections}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RecipeError(f"{source}: unknown top-level key(s) {', '.join(unknown)}{_closest_keys(unknown, known)}; valid keys: {', '.join(sorted(known))}")
    values: dict[str, Any] = {
        "domain": raw["domain"],
        "head": raw["head"],
        "run_dir": _expect(raw["run_dir"], str, "run_dir"),
        "seed": _expect(raw.get("seed", 0), int, "seed"),
    }
    for name, cls in sections.items():
        values[name] = convert(raw.get(name, {}), cls, name)
    return Recipe(**values)


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set `section.key=value` in parsed recipe data. The value is read as TOML, else as a string."""
    if "=" not in override:
        raise RecipeError(f"override {override!r} is not of the form key=value, e.g. train.steps=200")
    key, text = override.split("=", 1)
    key = key.strip()
    if not key:
        raise RecipeError(f"override {override!r} has an empty key")
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        value = text
    parts = key.split(".")
    target = raw
    for part in parts[:-1]:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"override {key!r}: {part!r} is not a table")
        target = child
    target[parts[-1]] = value


def convert(value: Any, annotation: Any, where: str) -> Any:
    """Convert plain TOML data to `annotation`, raising `RecipeError` that names `where` on a mismatch."""
    if dataclasses.is_dataclass(annotation):
        return _convert_dataclass(value, annotation, where)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return convert(value, option, where)
            except RecipeError as error:
                errors.append(str(error))
        raise RecipeError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of the allowed types")
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [convert(item, args[0] if args else Any, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(convert(item, args[0] if args else Any, f"{where}[{i}]") for i, item in enumerate(value))
    if annotation is Any:
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise RecipeError(f"{where}: unsupported field type {annotation!r}")


def _convert_dataclass(value: Any, cls: type, where: str) -> Any:
    if not isinstance(value, Mapping):
        raise RecipeError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}{_closest_keys(unknown, fields)}; valid keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name in fields:
        if name in value:
            kwargs[name] = convert(value[name], hints[name], f"{where}.{name}")
    missing = [
        name for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecipeError(f"{where}: missing required key(s) {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except RecipeError as error:
        if str(error).startswith(f"{where}."):
            raise  # the message names the key already, e.g. "train.lr must be ..."
        raise RecipeError(f"{where}: {error}") from None


def _closest_keys(unknown: list[str], valid: Iterable[str]) -> str:
    """Return " (did you mean ...?)" naming the valid key closest to each unknown one, or ""."""
    valid = list(valid)
    guesses = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=1)
        if close:
            guesses.append(f"{close[0]} for {key}" if len(unknown) > 1 else close[0])
    return f" (did you mean {', '.join(guesses)}?)" if guesses else ""


def _expect(value: Any, kind: type, where: str) -> Any:
    return convert(value, kind, where)
