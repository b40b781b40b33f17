"""The model interface shared by every head, and building models from recipes or checkpoints."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from condgen.checkpoint import Checkpoint, load_checkpoint
from condgen.conditioning import Conditioner, Vocabulary, vocabularies_from_json
from condgen.errors import CheckpointError, CondgenError
from condgen.recipe import Recipe, recipe_from_dict
from condgen.registry import get_head

log = logging.getLogger(__name__)


class GeneratorModel(nn.Module):
    """A conditioner that fuses the labels, and a head that decodes the fused vector.

    Subclasses implement `decode(conditioning [B, fused_dim]) -> output` and
    `loss_terms(output, target) -> {name: scalar tensor}`; the trainer
    minimises the sum of the terms. `media` is "audio" or "image".
    """

    media = "audio"

    def __init__(self, conditioner: Conditioner):
        super().__init__()
        self.conditioner = conditioner

    def forward(self, labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.decode(self.conditioner(labels))

    def decode(self, conditioning: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss_terms(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def extra_meta(self) -> dict[str, Any]:
        """JSON data that generation needs besides the recipe (e.g. the sample rate)."""
        return {}

    def render(self, output: torch.Tensor, **options: Any) -> torch.Tensor:
        """Turn the decoder output into the media it stands for: audio `[B, n_samples]` or images `[B, C, H, W]`.

        Heads whose output is already the media return it unchanged. A head
        that outputs another representation (a spectrogram, say) converts it
        here, accepts the conversion settings as keyword `options`, and lists
        their names in `render_options()`.
        """
        self.check_render_options(options)
        return output

    def render_options(self) -> frozenset[str]:
        """Return the names of the keyword options that `render` accepts: none here, and heads that convert their output override this."""
        return frozenset()

    def describe_rendering(self) -> str:
        """Describe how `render` produces the media, as a clause that completes "the model ...", for error messages."""
        return f"outputs its {self.media} directly"

    def check_render_options(self, options: Iterable[str]) -> None:
        """Raise `CondgenError` naming every option in `options` that `render_options()` lacks, and why."""
        rejected = sorted(set(options) - self.render_options())
        if rejected:
            accepted = ", ".join(sorted(self.render_options())) or "none"
            raise CondgenError(
                f"rendering option(s) {', '.join(rejected)} do not apply: the {type(self).__name__} model "
                f"{self.describe_rendering()}; options it accepts: {accepted}"
            )


def build_model(recipe: Recipe, vocabularies: Mapping[str, Vocabulary]) -> GeneratorModel:
    """Build the conditioner and the head that `recipe` names."""
    head = get_head(recipe.head)
    conditioner = Conditioner(recipe.conditioning, vocabularies)
    return head.build(recipe.model, conditioner, recipe.data)


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, in eval mode, with the recipe it was trained with."""

    model: GeneratorModel
    recipe: Recipe
    meta: dict[str, Any]
    path: Path

    @property
    def conditioner(self) -> Conditioner:
        return self.model.conditioner


def load_model(path: str | Path, device: str | torch.device = "cpu", expect_domain: str | None = None) -> LoadedModel:
    """Rebuild a trained model from a checkpoint file alone.

    Raises `CheckpointError` naming the file when it is not a checkpoint, is
    for another domain than `expect_domain`, or its weights do not fit the
    model that its recipe describes.
    """
    path = Path(path)
    checkpoint: Checkpoint = load_checkpoint(path, with_train_state=False)
    meta = checkpoint.meta
    if expect_domain is not None and meta.get("domain") != expect_domain:
        raise CheckpointError(f"{path} is a {meta.get('domain')!r} checkpoint (head {meta.get('head')!r}); this command needs a {expect_domain!r} checkpoint")
    try:
        recipe = recipe_from_dict(meta["recipe"], source=f"recipe stored in {path}")
        vocabularies = vocabularies_from_json(meta["vocabularies"])
    except KeyError as error:
        raise CheckpointError(f"{path} lacks the stored {error.args[0]!r}; it was not written by condgen train") from None
    except CondgenError as error:
        raise CheckpointError(f"{path}: {error}") from None
    model = build_model(recipe, vocabularies)
    load_state(model, checkpoint.model_state, path)
    model.to(device).eval()
    return LoadedModel(model=model, recipe=recipe, meta=meta, path=path)


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load weights strictly, naming the file and every mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{name}: checkpoint {tuple(state[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in sorted(set(expected) & set(state))
        if state[name].shape != expected[name].shape
    ]
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"missing {', '.join(missing[:5])}")
        if unexpected:
            details.append(f"unexpected {', '.join(unexpected[:5])}")
        if mismatched:
            details.append(f"shape mismatch {'; '.join(mismatched[:5])}")
        raise CheckpointError(f"{path}: weights do not match the model its recipe describes ({'; '.join(details)})")
    model.load_state_dict(state, strict=True)
