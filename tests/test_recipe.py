"""Recipe loading, overrides and validation."""

from pathlib import Path

import pytest

from condgen.errors import RecipeError
from condgen.recipe import apply_override, load_recipe

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO_ROOT / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_load(path):
    recipe = load_recipe(path)
    assert recipe.run_dir
    assert recipe.conditioning.labels


def test_overrides_apply_with_types():
    recipe = load_recipe(REPO_ROOT / "recipes" / "nsynth_ddsp.toml", ["train.steps=7", "train.lr=0.01", "data.root=/tmp/x", 'data.velocities=[25, 127]'])
    assert recipe.train.steps == 7
    assert recipe.train.lr == 0.01
    assert recipe.data.root == "/tmp/x"
    assert recipe.data.velocities == [25, 127]


CASES = [
    (["train.stepz=5"], "train: unknown key(s) stepz"),
    (["train.steps=abc"], "train.steps: expected an integer, got str 'abc'"),
    (["train.lr=-0.1"], "train.lr must be a positive number, got -0.1"),
    (["head=wavenet"], "head 'wavenet' does not exist"),
    (["model.n_harmonics=1.5"], "model.n_harmonics: expected an integer"),
    (["train.schedule=linear"], "train.schedule 'linear' is invalid"),
    (["colour=red"], "unknown top-level key(s) colour"),
    (["train.steps"], "not of the form key=value"),
]


@pytest.mark.parametrize("overrides,message", CASES, ids=[c[1][:30] for c in CASES])
def test_bad_overrides_rejected_by_name(overrides, message):
    with pytest.raises(RecipeError) as error:
        load_recipe(REPO_ROOT / "recipes" / "nsynth_ddsp.toml", overrides)
    assert message in str(error.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.toml")


def test_invalid_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("domain = \n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(path)


def test_override_string_fallback():
    raw = {}
    apply_override(raw, "data.root=some/path")
    apply_override(raw, "train.steps=3")
    assert raw == {"data": {"root": "some/path"}, "train": {"steps": 3}}
