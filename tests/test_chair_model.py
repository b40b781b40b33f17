"""The up-convolutional chair head, the chairs domain, its recipes, and a tiny training run on real chairs."""

from pathlib import Path

import numpy as np
import pytest
import torch

from condgen.checkpoint import load_checkpoint
from condgen.cli import main
from condgen.conditioning import ConditioningConfig, Conditioner, LabelSpec, Vocabulary
from condgen.errors import RecipeError
from condgen.recipe import load_recipe
from condgen.vision.domain import ChairsDataConfig, azimuth_index, build_datasets, collate_views
from condgen.vision.model import (
    UpconvConfig,
    UpconvModel,
    composite_on_white,
    count_stages,
    foreground_mask,
    pixel_loss,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAIRS = ["chair_a", "chair_b", "chair_c"]
TINY_MODEL = {"fc_dims": [16], "base_channels": 16, "min_channels": 4, "base_size": 4}
TINY_TRAIN = [
    "data.image_size=32",
    "conditioning.fused_dim=16",
    "model.fc_dims=[32]",
    "model.base_channels=16",
    "model.min_channels=8",
    "train.batch_size=4",
    "train.log_every=1",
    "train.sample_every=2",
    "train.checkpoint_every=2",
    "train.keep_last=1",
    "train.warmup_steps=0",
    "train.num_workers=0",
]


def make_conditioner() -> Conditioner:
    torch.manual_seed(0)
    labels = [
        LabelSpec("chair", "categorical", dim=8),
        LabelSpec("azimuth_deg", "periodic", dim=6, period=360.0),
        LabelSpec("elevation_deg", "periodic", dim=4, period=360.0),
    ]
    return Conditioner(ConditioningConfig(labels=labels, fused_dim=16), {"chair": Vocabulary("chair", CHAIRS)})


def make_model(image_size: int = 32, **overrides) -> UpconvModel:
    config = UpconvConfig(**{**TINY_MODEL, **overrides})
    return UpconvModel(config, make_conditioner(), image_size)


def encode(conditioner: Conditioner, chairs, azimuths, elevations) -> dict:
    return conditioner.encode_values({"chair": chairs, "azimuth_deg": azimuths, "elevation_deg": elevations})


# -- view encoding -------------------------------------------------------------


def test_azimuth_wraps_at_360():
    conditioner = make_conditioner()
    inputs = encode(conditioner, ["chair_a"] * 3, [0.0, 360.0, 90.0], [20.0, 20.0, 20.0])
    with torch.no_grad():
        fused = conditioner(inputs)
    torch.testing.assert_close(fused[0], fused[1], atol=1e-5, rtol=0)
    assert (fused[0] - fused[2]).abs().max() > 1e-3


def test_periodic_input_is_sin_cos():
    conditioner = make_conditioner()
    captured = []
    conditioner.periodic["azimuth_deg"].register_forward_hook(lambda module, args, output: captured.append(args[0].clone()))
    azimuths = [0.0, 360.0, 90.0, 123.5, -45.0]
    with torch.no_grad():
        conditioner(encode(conditioner, ["chair_b"] * 5, azimuths, [30.0] * 5))
    radians = np.deg2rad(azimuths)
    expected = np.stack([np.sin(radians), np.cos(radians)], axis=1)
    np.testing.assert_allclose(captured[0].numpy(), expected, atol=1e-6)


# -- decoder -------------------------------------------------------------------


@pytest.mark.parametrize("upsample", ["transposed", "nearest", "bilinear"])
@pytest.mark.parametrize("image_size", [64, 128])
def test_decoder_output_shape(upsample, image_size):
    model = make_model(image_size, upsample=upsample, kernel_size=5 if upsample != "transposed" else 4)
    inputs = encode(model.conditioner, ["chair_a", "chair_c"], [0.0, 200.0], [20.0, 30.0])
    with torch.no_grad():
        output = model(inputs)
    assert output.shape == (2, 3, image_size, image_size)
    assert float(output.min()) >= 0.0
    assert float(output.max()) <= 1.0
    assert len(model.decoder.stages) == count_stages(image_size, 4)


@pytest.mark.parametrize("kernel_size", [2, 3, 4, 5])
def test_transposed_kernels_double_size(kernel_size):
    model = make_model(32, upsample="transposed", kernel_size=kernel_size)
    with torch.no_grad():
        output = model(encode(model.conditioner, ["chair_a"], [10.0], [20.0]))
    assert output.shape == (1, 3, 32, 32)


def test_mask_output_and_composite():
    model = make_model(32, mask=True)
    with torch.no_grad():
        output = model(encode(model.conditioner, ["chair_a"], [10.0], [20.0]))
    assert output.shape == (1, 4, 32, 32)
    images = model.images(output)
    expected = output[:, :3] * output[:, 3:] + (1 - output[:, 3:])
    torch.testing.assert_close(images, expected)


def test_stage_count_and_channels():
    assert count_stages(64, 4) == 4
    assert count_stages(128, 4) == 5
    assert count_stages(128, 8) == 4
    assert UpconvConfig(base_channels=256, min_channels=32).stage_channels(128) == [128, 64, 32, 32, 32]
    with pytest.raises(RecipeError, match="power of two"):
        count_stages(96, 4)
    with pytest.raises(RecipeError, match="3 widths"):
        UpconvConfig(base_size=8, channels=[64, 32]).stage_channels(64)


def test_gradients_reach_every_parameter():
    model = make_model(32, mask=True)
    inputs = encode(model.conditioner, CHAIRS, [0.0, 120.0, 240.0], [20.0, 30.0, 20.0])
    target = torch.rand(3, 3, 32, 32)
    loss = sum(model.loss_terms(model(inputs), target).values())
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_training_steps_fit_one_image():
    torch.manual_seed(0)
    model = make_model(16, base_size=4)
    inputs = encode(model.conditioner, ["chair_b"], [45.0], [20.0])
    target = torch.ones(1, 3, 16, 16)
    target[:, :, 4:12, 6:10] = 0.3
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = model.loss_terms(model(inputs), target)["pixel"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first


# -- losses --------------------------------------------------------------------


def test_pixel_losses_match_numpy():
    generator = torch.Generator().manual_seed(1)
    output = torch.rand(2, 3, 8, 8, generator=generator)
    target = torch.rand(2, 3, 8, 8, generator=generator)
    difference = output.numpy().astype(np.float64) - target.numpy().astype(np.float64)
    assert pixel_loss(output, target, "l2").item() == pytest.approx(np.mean(difference**2), rel=1e-5)
    assert pixel_loss(output, target, "l1").item() == pytest.approx(np.mean(np.abs(difference)), rel=1e-5)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_model_loss_uses_recipe_kind(kind):
    model = make_model(16, loss=kind)
    output = torch.full((1, 3, 16, 16), 0.25)
    target = torch.ones(1, 3, 16, 16)
    expected = 0.75**2 if kind == "l2" else 0.75
    assert model.loss_terms(output, target) == {"pixel": pytest.approx(expected)}


def test_mask_loss_matches_numpy():
    model = make_model(8, mask=True, mask_weight=0.5)
    target = torch.ones(1, 3, 8, 8)
    target[0, :, 2:5, 3:6] = 0.4
    target[0, 1, 0, 0] = 0.97  # one channel below 0.98 makes a chair pixel
    output = torch.rand(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)) * 0.9 + 0.05
    terms = model.loss_terms(output, target)
    mask = (target[0].numpy().min(axis=0) < 0.98).astype(np.float64)
    assert mask.sum() == 10
    probability = output[0, 3].numpy().astype(np.float64)
    bce = -np.mean(mask * np.log(probability) + (1 - mask) * np.log(1 - probability))
    assert terms["mask"].item() == pytest.approx(0.5 * bce, rel=1e-5)
    np.testing.assert_array_equal(foreground_mask(target)[0, 0].numpy(), mask)


def test_composite_on_white_values():
    rgb = torch.full((1, 3, 1, 2), 0.2)
    mask = torch.tensor([[[[0.0, 0.75]]]])
    np.testing.assert_allclose(composite_on_white(rgb, mask)[0, 0, 0].numpy(), [1.0, 0.2 * 0.75 + 0.25])


# -- configuration -------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.upsample=cubic", "model.upsample"),
        ("model.loss=l3", "model.loss"),
        ("model.kernel_size=4", "odd"),
        ("data.holdout_offset=4", "holdout_offset"),
        ("data.image_size=4", "image_size"),
    ],
)
def test_recipe_rejects_bad_values(override, message):
    overrides = [override] if override != "model.kernel_size=4" else [override, "model.upsample=nearest"]
    with pytest.raises(RecipeError, match=message):
        load_recipe(REPO_ROOT / "recipes" / "chairs_64.toml", overrides)


@pytest.mark.parametrize("name, image_size", [("chairs_64", 64), ("chairs_128", 128), ("demo_chairs", None)])
def test_recipes_build_models(name, image_size):
    recipe = load_recipe(REPO_ROOT / "recipes" / f"{name}.toml")
    assert recipe.domain == "chairs"
    assert recipe.head == "upconv"
    if image_size is not None:
        assert recipe.data.image_size == image_size
    vocabularies = {"chair": Vocabulary("chair", CHAIRS)}
    from condgen.model import build_model

    model = build_model(recipe, vocabularies)
    labels = {"chair": ["chair_a"], "azimuth_deg": [5.0], "elevation_deg": [20.0]}
    with torch.no_grad():
        output = model(model.conditioner.encode_values(labels))
    assert output.shape[-2:] == (recipe.data.image_size, recipe.data.image_size)


# -- the chairs domain on real renders -----------------------------------------


def first_chairs(chairs_dir: Path, n: int) -> list[str]:
    return sorted(p.name for p in (chairs_dir / "rendered_chairs").iterdir() if p.is_dir())[:n]


def test_domain_holds_out_every_fourth_azimuth(chairs_dir):
    names = first_chairs(chairs_dir, 2)
    config = ChairsDataConfig(root=str(chairs_dir / "rendered_chairs"), image_size=16, chairs=names, holdout_every=4)
    train, held_out = build_datasets(config, seed=0)
    # Azimuth indices 0, 4, ..., 28 (8 of 31) at 2 elevations for each of 2 chairs.
    assert len(held_out) == 2 * 2 * 8
    assert len(train) == 2 * 62 - 32
    assert {row["azimuth_index"] % 4 for row in held_out.metadata} == {0}
    assert all(row["azimuth_index"] % 4 for row in train.metadata)
    whole, none = build_datasets(ChairsDataConfig(root=config.root, image_size=16, chairs=names, holdout_every=0), seed=0)
    assert none is None
    assert len(whole) == 124


def test_collate_batches_labels_and_images(chairs_dir):
    names = first_chairs(chairs_dir, 1)
    train, _ = build_datasets(ChairsDataConfig(root=str(chairs_dir / "rendered_chairs"), image_size=16, chairs=names), seed=0)
    items = [train[i] for i in range(3)]
    labels, images = collate_views(items)
    assert images.shape == (3, 3, 16, 16)
    torch.testing.assert_close(images[1], items[1]["image"])
    assert labels["chair"] == names * 3
    assert labels["azimuth_deg"] == [item["azimuth_deg"] for item in items]
    assert labels["azimuth_index"] == [azimuth_index(item["azimuth_deg"]) for item in items]
    assert labels["azimuth_index"] == [row["azimuth_index"] for row in train.metadata[:3]]


def test_azimuth_index_of_dataset_angles():
    assert azimuth_index(0.0) == 0
    assert azimuth_index(11.0) == 1
    assert azimuth_index(348.0) == 30
    assert azimuth_index(360.0 + 23.0) == 2
    with pytest.raises(ValueError):
        azimuth_index(12.0)


# -- a tiny training run through the command line ------------------------------


@pytest.fixture(scope="module")
def tiny_run(chairs_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("chairs_run")
    names = first_chairs(chairs_dir, 2)
    args = [
        "train",
        str(REPO_ROOT / "recipes" / "chairs_64.toml"),
        f"data.root={chairs_dir / 'rendered_chairs'}",
        f"data.chairs={names!r}".replace("'", '"'),
        f"run_dir={run_dir}",
        "train.steps=3",
        *TINY_TRAIN,
        "--no-progress",
    ]
    assert main(args) == 0
    return run_dir


def test_training_writes_checkpoints(tiny_run):
    checkpoints = tiny_run / "checkpoints"
    assert (checkpoints / "latest.safetensors").is_file()
    assert (checkpoints / "best.safetensors").is_file()
    assert [p.name for p in checkpoints.glob("step_*")] == ["step_00000003.safetensors"]
    meta = load_checkpoint(checkpoints / "latest.safetensors", with_train_state=False).meta
    assert meta["step"] == 3
    assert meta["media"] == "image"
    assert meta["head_meta"] == {"image_size": 32, "mask": False}
    assert len(meta["vocabularies"]["chair"]) == 2


def test_tensorboard_has_images(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tiny_run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    assert "loss/pixel" in accumulator.Tags()["scalars"]
    image_tags = [tag for tag in accumulator.Tags()["images"] if tag.startswith("samples/")]
    assert image_tags
    event = accumulator.Images(image_tags[0])[-1]
    assert (event.width, event.height) == (32, 32)


@pytest.mark.slow
def test_training_learns_held_out_views(chairs_dir, tmp_path):
    """A short run on 2 chairs beats the mean training image on views it never saw."""
    names = first_chairs(chairs_dir, 2)
    run_dir = tmp_path / "run"
    args = [
        "train",
        str(REPO_ROOT / "recipes" / "chairs_64.toml"),
        f"data.root={chairs_dir / 'rendered_chairs'}",
        f"data.chairs={names!r}".replace("'", '"'),
        f"run_dir={run_dir}",
        "data.image_size=32",
        "train.steps=300",
        "train.batch_size=16",
        "train.lr=1e-3",
        "train.warmup_steps=20",
        "train.checkpoint_every=300",
        "train.sample_every=300",
        "--no-progress",
    ]
    assert main(args) == 0
    from condgen.vision.render import ChairRenderer

    renderer = ChairRenderer(run_dir / "checkpoints" / "latest.safetensors")
    train, held_out = build_datasets(ChairsDataConfig(root=str(chairs_dir / "rendered_chairs"), image_size=32, chairs=names), seed=0)
    mean_image = torch.stack([train[i]["image"] for i in range(len(train))]).mean(dim=0)
    model_errors, baseline_errors = [], []
    for i in range(len(held_out)):
        item = held_out[i]
        image = renderer.render(item["chair"], item["azimuth_deg"], item["elevation_deg"])
        model_errors.append(float(((image - item["image"]) ** 2).mean()))
        baseline_errors.append(float(((mean_image - item["image"]) ** 2).mean()))
    model_error, baseline_error = np.mean(model_errors), np.mean(baseline_errors)
    assert model_error < 0.6 * baseline_error, f"held-out MSE {model_error:.5f}, mean-image MSE {baseline_error:.5f}"
