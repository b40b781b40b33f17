"""Registries of domains (data readers) and heads (models), looked up by recipe name.

The core names each entry by the module that defines it, so it imports a head
only when a recipe or checkpoint names it, and contains no domain code itself.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from condgen.errors import RecipeError

# name -> "module:attribute" of a DomainSpec or HeadSpec
DOMAIN_MODULES = {
    "nsynth": "condgen.synth.domain:DOMAIN",
    "chairs": "condgen.vision.domain:DOMAIN",
}
HEAD_MODULES = {
    "ddsp": "condgen.synth.ddsp:HEAD",
    "upconv": "condgen.vision.model:HEAD",
    "waveform": "condgen.synth.waveform:HEAD",
    "spectrogram": "condgen.synth.spectrogram:HEAD",
}


@dataclass(frozen=True)
class DomainSpec:
    """A kind of data: how to read it from a `[data]` table and how to batch it.

    `build_datasets(config, seed)` returns `(train, validation_or_None)`;
    each dataset has `.metadata`, a list of label dicts, one per item.
    `collate(items)` turns a list of items into `(labels, target)`, where
    `labels` maps each label name to a list of raw values.
    `media` is "audio" or "image" and selects how samples are logged.
    """

    name: str
    config_class: type
    build_datasets: Callable[[Any, int], tuple[Any, Any]]
    collate: Callable[[list[dict]], tuple[dict[str, list], Any]]
    media: str


@dataclass(frozen=True)
class HeadSpec:
    """A model family: its `[model]` dataclass and a builder.

    `build(config, conditioner, data_config)` returns a `GeneratorModel`.
    """

    name: str
    domain: str
    config_class: type
    build: Callable[..., Any]


def _load(table: dict[str, str], name: str, what: str) -> Any:
    if name not in table:
        raise RecipeError(f"{what} {name!r} does not exist; valid {what}s: {', '.join(sorted(table))}")
    module_name, attribute = table[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)


def get_domain(name: str) -> DomainSpec:
    return _load(DOMAIN_MODULES, name, "domain")


def get_head(name: str) -> HeadSpec:
    return _load(HEAD_MODULES, name, "head")
