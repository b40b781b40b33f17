"""Label vocabularies and the conditioning module shared by every head.

A model is conditioned on a fixed set of named labels. Each label is either
categorical (a vocabulary of strings or integers, built from the training data
and stored in the checkpoint, looked up in an embedding table) or periodic (a
float such as an angle in degrees, encoded as its sine and cosine so that any
value can be asked for). The per-label features are concatenated and fused by a
small MLP into one conditioning vector `[B, fused_dim]`.

Values are validated against the vocabularies before any embedding lookup, so a
bad label gives a `LabelError` that names the value and the valid choices
instead of an index error deep inside `nn.Embedding`.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from condgen.errors import LabelError, RecipeError

LABEL_KINDS = ("categorical", "periodic")


@dataclass
class LabelSpec:
    """One conditioning label as a recipe declares it.

    `name` is the key of the label in the data items. `dim` is the width of the
    label's feature vector: the embedding width of a categorical label, or the
    output width of the linear layer applied to (sin, cos) of a periodic one.
    `period` is the value at which a periodic label wraps (360 for degrees).
    """

    name: str
    kind: str = "categorical"
    dim: int = 16
    period: float = 360.0

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise RecipeError(f"conditioning label {self.name!r}: kind {self.kind!r} is invalid; use one of {', '.join(LABEL_KINDS)}")
        if self.dim < 1:
            raise RecipeError(f"conditioning label {self.name!r}: dim must be at least 1, got {self.dim}")
        if self.kind == "periodic" and not self.period > 0:
            raise RecipeError(f"conditioning label {self.name!r}: period must be positive, got {self.period}")


@dataclass
class ConditioningConfig:
    """The labels that condition the model, and the width of the fused vector."""

    labels: list[LabelSpec] = field(default_factory=list)
    fused_dim: int = 128

    def __post_init__(self) -> None:
        if not self.labels:
            raise RecipeError("conditioning.labels is empty; list at least one label, e.g. [[conditioning.labels]] name = \"pitch\"")
        names = [spec.name for spec in self.labels]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise RecipeError(f"conditioning.labels names {', '.join(duplicates)} more than once; give each label once")
        if self.fused_dim < 1:
            raise RecipeError(f"conditioning.fused_dim must be at least 1, got {self.fused_dim}")


class Vocabulary:
    """The sorted set of values a categorical label took in the training data.

    Values are all strings or all integers. The index of a value is its
    position in sorted order, so a vocabulary rebuilt from the same data gives
    the same indices.
    """

    def __init__(self, name: str, values: Iterable[str | int]):
        unique = set(values)
        if not unique:
            raise LabelError(f"label {name!r} has no values in the training data")
        kinds = {type(v) for v in unique}
        if kinds - {str, int} or len(kinds) > 1:
            raise LabelError(f"label {name!r} mixes value types {sorted(k.__name__ for k in kinds)}; values must be all strings or all integers")
        self.name = name
        self.values: list[str | int] = sorted(unique)
        self._index = {value: i for i, value in enumerate(self.values)}

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, value: object) -> bool:
        return value in self._index

    @property
    def is_integer(self) -> bool:
        return isinstance(self.values[0], int)

    def index(self, value: str | int) -> int:
        """Return the index of `value`, or raise `LabelError` naming the closest valid values."""
        if self.is_integer and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise LabelError(f"{self.name} {value!r} is not an integer; {self.describe()}") from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if value in self._index:
            return self._index[value]
        raise LabelError(f"{self.name} {value!r} is not in the model's vocabulary; {self.suggest(value)}")

    def describe(self) -> str:
        """Describe the valid values in one line."""
        if self.is_integer:
            return f"valid values: {format_integer_values(self.values)}"
        shown = ", ".join(map(str, self.values[:10]))
        more = f" and {len(self.values) - 10} more" if len(self.values) > 10 else ""
        return f"valid names ({len(self.values)}): {shown}{more}"

    def suggest(self, value: object) -> str:
        """Name the closest valid values to `value`."""
        if self.is_integer and isinstance(value, (int, float)) and math.isfinite(value):
            nearest = sorted(self.values, key=lambda v: (abs(v - value), v))[:3]
            return f"closest valid values: {', '.join(map(str, sorted(nearest)))} ({self.describe()})"
        if not self.is_integer:
            close = difflib.get_close_matches(str(value), [str(v) for v in self.values], n=3, cutoff=0.0)
            return f"closest valid names: {', '.join(close)} ({len(self.values)} names in all)"
        return self.describe()

    def to_json(self) -> list[str | int]:
        return list(self.values)


def format_integer_values(values: Sequence[int]) -> str:
    """Format sorted integers compactly: `21-108` when contiguous, else a list or its ends."""
    if values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}" if len(values) > 1 else str(values[0])
    if len(values) <= 12:
        return ", ".join(map(str, values))
    return f"{len(values)} values from {values[0]} to {values[-1]}: {', '.join(map(str, values[:6]))}, ..."


def build_vocabularies(specs: Sequence[LabelSpec], items: Iterable[Mapping[str, object]]) -> dict[str, Vocabulary]:
    """Build one vocabulary per categorical label from label dicts (e.g. a dataset's metadata)."""
    categorical = [spec.name for spec in specs if spec.kind == "categorical"]
    collected: dict[str, set] = {name: set() for name in categorical}
    for item in items:
        for name in categorical:
            if name not in item or item[name] is None:
                raise LabelError(f"label {name!r} is missing from a data item (item keys: {', '.join(sorted(item))}); condition only on labels that every item has")
            collected[name].add(item[name])
    return {name: Vocabulary(name, values) for name, values in collected.items()}


class Conditioner(nn.Module):
    """Fuse the labels of a batch into one conditioning vector `[B, fused_dim]`.

    Categorical labels take either indices `[B]` (int64) or mixing weights
    `[B, vocabulary_size]` (float), whose product with the embedding table
    interpolates between entries (used for blends and morphs). Periodic labels
    take float values `[B]` in the units of their period.
    """

    def __init__(self, config: ConditioningConfig, vocabularies: Mapping[str, Vocabulary]):
        super().__init__()
        self.config = config
        self.vocabularies = dict(vocabularies)
        self.specs = {spec.name: spec for spec in config.labels}
        self.tables = nn.ModuleDict()
        self.periodic = nn.ModuleDict()
        total = 0
        for spec in config.labels:
            if spec.kind == "categorical":
                if spec.name not in self.vocabularies:
                    raise LabelError(f"no vocabulary for categorical label {spec.name!r}")
                self.tables[spec.name] = nn.Embedding(len(self.vocabularies[spec.name]), spec.dim)
                nn.init.normal_(self.tables[spec.name].weight, std=0.3)
            else:
                self.periodic[spec.name] = nn.Linear(2, spec.dim)
            total += spec.dim
        self.fuse = nn.Sequential(nn.Linear(total, config.fused_dim), nn.SiLU(), nn.Linear(config.fused_dim, config.fused_dim))

    @property
    def label_names(self) -> list[str]:
        return [spec.name for spec in self.config.labels]

    def encode_values(self, values: Mapping[str, Sequence[object]], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Validate raw label values (names, integers, angles) and turn them into model inputs.

        `values[name]` contains one value per batch item. Raises `LabelError` on
        an unknown name, a value outside the vocabulary, or a non-finite angle,
        before any embedding lookup.
        """
        missing = [name for name in self.label_names if name not in values]
        if missing:
            raise LabelError(f"missing label values for {', '.join(missing)}; the model is conditioned on {', '.join(self.label_names)}")
        encoded: dict[str, torch.Tensor] = {}
        for spec in self.config.labels:
            column = list(values[spec.name])
            if spec.kind == "categorical":
                vocabulary = self.vocabularies[spec.name]
                encoded[spec.name] = torch.tensor([vocabulary.index(v) for v in column], dtype=torch.long, device=device)
            else:
                floats = []
                for v in column:
                    try:
                        number = float(v)
                    except (TypeError, ValueError):
                        raise LabelError(f"{spec.name} {v!r} is not a number") from None
                    if not math.isfinite(number):
                        raise LabelError(f"{spec.name} {v!r} is not a finite number; give a value such as 0 to {spec.period:g}")
                    floats.append(number)
                encoded[spec.name] = torch.tensor(floats, dtype=torch.float32, device=device)
        return encoded

    def forward(self, labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        features = []
        for spec in self.config.labels:
            value = labels[spec.name]
            if spec.kind == "categorical":
                table = self.tables[spec.name]
                if value.dtype.is_floating_point:
                    features.append(value.to(table.weight.dtype) @ table.weight)
                else:
                    _check_index_range(spec.name, value, table.num_embeddings)
                    features.append(table(value))
            else:
                angle = value.to(torch.float32) * (2 * math.pi / spec.period)
                features.append(self.periodic[spec.name](torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1)))
        return self.fuse(torch.cat(features, dim=-1))

    def mix(self, name: str, value_a: object, value_b: object, weight_b: float, batch_size: int = 1) -> torch.Tensor:
        """Mixing weights `[batch_size, vocabulary_size]` that blend two values of a categorical label.

        `weight_b` is the share of `value_b`, from 0 (all `value_a`) to 1 (all `value_b`).
        """
        if not 0.0 <= weight_b <= 1.0 or math.isnan(weight_b):
            raise LabelError(f"mix weight {weight_b} is outside [0, 1]; 0 gives the first value and 1 the second")
        vocabulary = self.vocabularies[name]
        weights = torch.zeros(batch_size, len(vocabulary))
        weights[:, vocabulary.index(value_a)] += 1.0 - weight_b
        weights[:, vocabulary.index(value_b)] += weight_b
        return weights

    def vocabulary_json(self) -> dict[str, list[str | int]]:
        return {name: vocabulary.to_json() for name, vocabulary in self.vocabularies.items()}


def _check_index_range(name: str, indices: torch.Tensor, size: int) -> None:
    # nn.Embedding on CUDA reports an out-of-range index only as a device-side
    # assert, so indices are checked here first. This costs one sync per batch.
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= size):
        raise LabelError(f"label {name!r} index out of range: got {indices.min().item()}..{indices.max().item()}, vocabulary size {size}")


def vocabularies_from_json(data: Mapping[str, Sequence[str | int]]) -> dict[str, Vocabulary]:
    """Rebuild vocabularies stored in a checkpoint."""
    return {name: Vocabulary(name, values) for name, values in data.items()}
