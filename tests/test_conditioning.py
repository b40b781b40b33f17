"""Vocabularies and the conditioning module."""

import math

import pytest
import torch

from condgen.conditioning import (
    ConditioningConfig,
    Conditioner,
    LabelSpec,
    Vocabulary,
    build_vocabularies,
    vocabularies_from_json,
)
from condgen.errors import LabelError, RecipeError

ITEMS = [
    {"instrument_str": "guitar_acoustic_001", "pitch": 60, "velocity": 100, "azimuth": 0.0},
    {"instrument_str": "guitar_acoustic_010", "pitch": 62, "velocity": 50, "azimuth": 90.0},
    {"instrument_str": "bass_synthetic_033", "pitch": 64, "velocity": 100, "azimuth": 180.0},
]
SPECS = [
    LabelSpec("instrument_str", dim=4),
    LabelSpec("pitch", dim=3),
    LabelSpec("velocity", dim=2),
    LabelSpec("azimuth", kind="periodic", dim=2, period=360.0),
]


def make_conditioner(fused_dim: int = 8) -> Conditioner:
    torch.manual_seed(0)
    config = ConditioningConfig(labels=list(SPECS), fused_dim=fused_dim)
    return Conditioner(config, build_vocabularies(SPECS, ITEMS))


def test_vocabulary_sorted_and_indexed():
    vocabulary = Vocabulary("pitch", [64, 60, 62, 60])
    assert vocabulary.values == [60, 62, 64]
    assert vocabulary.index(62) == 1
    assert vocabulary.index("64") == 2


def test_unknown_name_lists_closest():
    vocabulary = Vocabulary("instrument_str", [item["instrument_str"] for item in ITEMS])
    with pytest.raises(LabelError) as error:
        vocabulary.index("guitar_acoustic_011")
    message = str(error.value)
    assert "guitar_acoustic_011" in message
    assert "closest valid names: guitar_acoustic_010" in message


def test_unknown_integer_names_range():
    vocabulary = Vocabulary("pitch", range(21, 109))
    with pytest.raises(LabelError) as error:
        vocabulary.index(200)
    assert "200" in str(error.value)
    assert "21-108" in str(error.value)


def test_vocabulary_rejects_mixed_types():
    with pytest.raises(LabelError):
        Vocabulary("x", ["a", 1])


def test_missing_label_in_items():
    with pytest.raises(LabelError, match="velocity"):
        build_vocabularies([LabelSpec("velocity")], [{"pitch": 60}])


def test_config_rejects_bad_specs():
    with pytest.raises(RecipeError, match="kind"):
        LabelSpec("pitch", kind="ordinal")
    with pytest.raises(RecipeError, match="more than once"):
        ConditioningConfig(labels=[LabelSpec("pitch"), LabelSpec("pitch")])
    with pytest.raises(RecipeError, match="empty"):
        ConditioningConfig(labels=[])


def test_encode_values_validates_before_lookup():
    conditioner = make_conditioner()
    values = {"instrument_str": ["nope"], "pitch": [60], "velocity": [100], "azimuth": [0.0]}
    with pytest.raises(LabelError, match="nope"):
        conditioner.encode_values(values)
    values = {"instrument_str": ["bass_synthetic_033"], "pitch": [60], "velocity": [100], "azimuth": [math.nan]}
    with pytest.raises(LabelError, match="finite"):
        conditioner.encode_values(values)


def test_fused_vector_equals_manual_computation():
    conditioner = make_conditioner()
    inputs = conditioner.encode_values({name: [item[name] for item in ITEMS] for name in conditioner.label_names})
    fused = conditioner(inputs)
    assert fused.shape == (3, 8)
    # Independent computation from the raw tables.
    features = [
        conditioner.tables["instrument_str"].weight[inputs["instrument_str"]],
        conditioner.tables["pitch"].weight[inputs["pitch"]],
        conditioner.tables["velocity"].weight[inputs["velocity"]],
    ]
    radians = torch.tensor([0.0, math.pi / 2, math.pi])
    features.append(conditioner.periodic["azimuth"](torch.stack([radians.sin(), radians.cos()], -1)))
    expected = conditioner.fuse(torch.cat(features, -1))
    torch.testing.assert_close(fused, expected)


def test_periodic_label_wraps():
    conditioner = make_conditioner()
    base = {"instrument_str": ["bass_synthetic_033"] * 2, "pitch": [60] * 2, "velocity": [100] * 2}
    fused = conditioner(conditioner.encode_values({**base, "azimuth": [0.0, 360.0]}))
    torch.testing.assert_close(fused[0], fused[1], atol=1e-5, rtol=0)
    other = conditioner(conditioner.encode_values({**base, "azimuth": [0.0, 45.0]}))
    assert not torch.allclose(other[0], other[1])


def test_mix_weights_interpolate_embeddings():
    conditioner = make_conditioner()
    table = conditioner.tables["instrument_str"]
    weights = conditioner.mix("instrument_str", "guitar_acoustic_001", "bass_synthetic_033", 0.25)
    vocabulary = conditioner.vocabularies["instrument_str"]
    expected = 0.75 * table.weight[vocabulary.index("guitar_acoustic_001")] + 0.25 * table.weight[vocabulary.index("bass_synthetic_033")]
    torch.testing.assert_close((weights @ table.weight)[0], expected)
    with pytest.raises(LabelError, match="outside"):
        conditioner.mix("instrument_str", "guitar_acoustic_001", "bass_synthetic_033", 1.5)


def test_vocabulary_json_round_trip():
    conditioner = make_conditioner()
    rebuilt = vocabularies_from_json(conditioner.vocabulary_json())
    assert {name: v.values for name, v in rebuilt.items()} == {name: v.values for name, v in conditioner.vocabularies.items()}
