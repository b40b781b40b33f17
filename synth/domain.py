"""The `nsynth` domain: NSynth-format notes as training data for the audio heads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from condgen.errors import RecipeError
from condgen.registry import DomainSpec

# Label fields that every NSynth source provides, in the order used for logging.
LABEL_FIELDS = ("instrument_str", "pitch", "velocity", "instrument_family_str", "instrument_source_str", "note_str")


@dataclass
class NSynthDataConfig:
    """The `[data]` table of an NSynth recipe.

    `path` lists TFRecord files, json/wav folders (with `examples.json`) or
    folders of NSynth-named WAVs; relative entries are read from `root`.
    The filters keep only matching notes; empty lists keep everything.
    """

    path: list[str] = field(default_factory=list)
    root: str = "."
    sources: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    instruments: list[str] = field(default_factory=list)
    velocities: list[int] = field(default_factory=list)
    pitch_min: int = 0
    pitch_max: int = 127

    def __post_init__(self) -> None:
        if not self.path:
            raise RecipeError("data.path is empty; list NSynth TFRecord files or json/wav folders, e.g. path = [\"nsynth-train.tfrecord\"]")
        if not 0 <= self.pitch_min <= self.pitch_max <= 127:
            raise RecipeError(f"data.pitch_min {self.pitch_min} and data.pitch_max {self.pitch_max} must satisfy 0 <= pitch_min <= pitch_max <= 127")

    def resolved_paths(self) -> list[Path]:
        return [Path(self.root) / entry for entry in self.path]


def build_datasets(config: NSynthDataConfig, seed: int):
    from condgen.synth.nsynth import NSynthFilter, NSynthNotes

    filters = NSynthFilter(
        sources=config.sources or None,
        families=config.families or None,
        instruments=config.instruments or None,
        velocities=config.velocities or None,
        pitch_min=config.pitch_min,
        pitch_max=config.pitch_max,
    )
    return NSynthNotes(config.resolved_paths(), filters=filters), None


def collate_notes(items: list[dict]) -> tuple[dict[str, list], torch.Tensor]:
    """Batch NSynth items into raw label lists and audio `[B, n_samples]`."""
    labels = {name: [item[name] for item in items] for name in LABEL_FIELDS}
    audio = torch.stack([item["audio"] for item in items])
    return labels, audio


DOMAIN = DomainSpec(
    name="nsynth",
    config_class=NSynthDataConfig,
    build_datasets=build_datasets,
    collate=collate_notes,
    media="audio",
)
