"""The `upconv` head: an up-convolutional decoder from the conditioning vector to an image.

The design follows Dosovitskiy, Springenberg and Brox, "Learning to Generate
Chairs with Convolutional Neural Networks" (CVPR 2015). The labels (chair
identity, view angles as sine and cosine) are fused by the shared conditioner.
Fully connected layers map the fused vector to a small feature map, and
upsampling stages double its side until it reaches the image size. Each stage
is either a stride-2 transposed convolution, or a nearest or bilinear 2x
upsampling followed by a convolution (the paper's "unpooling + 5x5
convolution"). A sigmoid maps the last layer to RGB in [0, 1].

With `mask = true` a second output channel predicts the chair's silhouette,
trained with binary cross-entropy against the pixels that are not background
white. The model's output then has 4 channels (RGB, then the mask
probability), and `images()` composites RGB on white through the mask.

The pixel loss is the mean squared (`l2`) or absolute (`l1`) difference over
all RGB values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from condgen.conditioning import Conditioner
from condgen.errors import RecipeError
from condgen.model import GeneratorModel
from condgen.registry import HeadSpec

UPSAMPLE_KINDS = ("transposed", "nearest", "bilinear")
LOSS_KINDS = ("l1", "l2")
# A pixel belongs to the chair when its darkest channel is below this value;
# the renders have a pure white background.
DEFAULT_WHITE_THRESHOLD = 0.98


@dataclass
class UpconvConfig:
    """The `[model]` table of an up-convolutional image recipe.

    `fc_dims` are the widths of the fully connected layers between the fused
    vector and the first feature map, which has `base_channels` channels and
    `base_size` x `base_size` pixels. Each upsampling stage doubles the side
    and halves the channels, down to `min_channels`, so the number of stages
    is log2(image_size / base_size). `channels`, when given, sets the output
    channels of each stage instead and must have one entry per stage.
    `convs_per_stage` counts the convolutions of a stage: the first one
    upsamples, the others are 3x3 at the new size.
    """

    fc_dims: list[int] = field(default_factory=lambda: [512, 512])
    base_size: int = 4
    base_channels: int = 256
    min_channels: int = 32
    channels: list[int] = field(default_factory=list)
    upsample: str = "transposed"
    kernel_size: int = 5
    convs_per_stage: int = 1
    negative_slope: float = 0.2
    loss: str = "l2"
    mask: bool = False
    mask_weight: float = 0.1
    white_threshold: float = DEFAULT_WHITE_THRESHOLD
    # Bias of the RGB output before the sigmoid: the images are mostly white
    # background, so starting near white (sigmoid(2) = 0.88) saves early steps.
    output_bias: float = 2.0

    def __post_init__(self) -> None:
        if self.upsample not in UPSAMPLE_KINDS:
            raise RecipeError(f"model.upsample {self.upsample!r} is invalid; use one of {', '.join(UPSAMPLE_KINDS)}")
        if self.loss not in LOSS_KINDS:
            raise RecipeError(f"model.loss {self.loss!r} is invalid; use one of {', '.join(LOSS_KINDS)}")
        if any(width < 1 for width in self.fc_dims):
            raise RecipeError(f"model.fc_dims must list positive widths, got {self.fc_dims}")
        for name in ("base_size", "base_channels", "min_channels", "convs_per_stage"):
            if getattr(self, name) < 1:
                raise RecipeError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if any(width < 1 for width in self.channels):
            raise RecipeError(f"model.channels must list positive widths, got {self.channels}")
        if not 2 <= self.kernel_size <= 9:
            raise RecipeError(f"model.kernel_size must be from 2 to 9, got {self.kernel_size}")
        if self.upsample != "transposed" and self.kernel_size % 2 == 0:
            raise RecipeError(f"model.kernel_size must be odd with upsample = {self.upsample!r} so that the convolution keeps the size, got {self.kernel_size}")
        if not 0 <= self.negative_slope < 1:
            raise RecipeError(f"model.negative_slope must be within [0, 1), got {self.negative_slope}")
        if self.mask_weight < 0:
            raise RecipeError(f"model.mask_weight must be 0 or more, got {self.mask_weight}")
        if not 0 < self.white_threshold <= 1:
            raise RecipeError(f"model.white_threshold must be within (0, 1], got {self.white_threshold}")

    def stage_channels(self, image_size: int) -> list[int]:
        """Return the output channels of each upsampling stage for `image_size` pixels."""
        n_stages = count_stages(image_size, self.base_size)
        if self.channels:
            if len(self.channels) != n_stages:
                raise RecipeError(
                    f"model.channels lists {len(self.channels)} widths, but {image_size} px from a {self.base_size} px map takes "
                    f"{n_stages} stages; give {n_stages} widths or leave model.channels empty"
                )
            return list(self.channels)
        return [max(self.min_channels, self.base_channels >> (i + 1)) for i in range(n_stages)]


def count_stages(image_size: int, base_size: int) -> int:
    """Return the number of 2x upsampling stages from `base_size` to `image_size` pixels."""
    ratio = image_size // base_size
    if image_size % base_size or ratio & (ratio - 1) or ratio < 1:
        raise RecipeError(
            f"data.image_size {image_size} must be model.base_size {base_size} times a power of two, "
            f"because each decoder stage doubles the side; e.g. 64 or 128 with base_size 4 or 8"
        )
    return ratio.bit_length() - 1


def pixel_loss(output: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Return the mean squared (`l2`) or absolute (`l1`) difference of two equal-shape tensors."""
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape")
    if kind == "l2":
        return F.mse_loss(output, target)
    if kind == "l1":
        return F.l1_loss(output, target)
    raise ValueError(f"loss kind {kind!r} is invalid; use one of {', '.join(LOSS_KINDS)}")


def foreground_mask(images: torch.Tensor, white_threshold: float = DEFAULT_WHITE_THRESHOLD) -> torch.Tensor:
    """Return 1.0 where a pixel is not background white, from images `[B, 3, H, W]`; shape `[B, 1, H, W]`."""
    return (images.amin(dim=1, keepdim=True) < white_threshold).to(images.dtype)


def composite_on_white(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Blend `rgb` `[B, 3, H, W]` over white with coverage `mask` `[B, 1, H, W]` in [0, 1]."""
    return rgb * mask + (1.0 - mask)


class UpsampleStage(nn.Module):
    """One decoder stage: `[B, in_channels, S, S]` -> `[B, out_channels, 2S, 2S]`."""

    def __init__(self, in_channels: int, out_channels: int, upsample: str, kernel_size: int, n_convs: int, negative_slope: float):
        super().__init__()
        layers: list[nn.Module] = []
        if upsample == "transposed":
            # out = 2 * in for padding p and output_padding 2 + 2p - k, which is 0 or 1 here.
            padding = (kernel_size - 1) // 2
            layers.append(nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=2, padding=padding, output_padding=2 + 2 * padding - kernel_size))
        else:
            layers.append(nn.Upsample(scale_factor=2, mode=upsample, **({"align_corners": False} if upsample == "bilinear" else {})))
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2))
        layers.append(nn.LeakyReLU(negative_slope))
        for _ in range(n_convs - 1):
            layers.append(nn.Conv2d(out_channels, out_channels, 3, padding=1))
            layers.append(nn.LeakyReLU(negative_slope))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class UpconvDecoder(nn.Module):
    """Map a conditioning vector `[B, cond_dim]` to RGB logits `[B, 3, H, W]` and optional mask logits `[B, 1, H, W]`."""

    def __init__(self, config: UpconvConfig, cond_dim: int, image_size: int):
        super().__init__()
        self.config = config
        self.image_size = image_size
        slope = config.negative_slope
        fc_layers: list[nn.Module] = []
        width = cond_dim
        for hidden in config.fc_dims:
            fc_layers += [nn.Linear(width, hidden), nn.LeakyReLU(slope)]
            width = hidden
        fc_layers += [nn.Linear(width, config.base_channels * config.base_size**2), nn.LeakyReLU(slope)]
        self.fc = nn.Sequential(*fc_layers)

        stages = []
        in_channels = config.base_channels
        for out_channels in config.stage_channels(image_size):
            stages.append(UpsampleStage(in_channels, out_channels, config.upsample, config.kernel_size, config.convs_per_stage, slope))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.to_rgb = nn.Conv2d(in_channels, 3, 3, padding=1)
        nn.init.constant_(self.to_rgb.bias, config.output_bias)
        self.to_mask = nn.Conv2d(in_channels, 1, 3, padding=1) if config.mask else None

    def forward(self, conditioning: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        base = self.fc(conditioning).view(-1, self.config.base_channels, self.config.base_size, self.config.base_size)
        features = self.stages(base)
        mask_logits = self.to_mask(features) if self.to_mask is not None else None
        return self.to_rgb(features), mask_logits


class UpconvModel(GeneratorModel):
    """Conditioner plus up-convolutional decoder.

    Output: images `[B, 3, H, W]` in [0, 1], or `[B, 4, H, W]` with the mask
    probability as the fourth channel when `mask` is on.
    """

    media = "image"

    def __init__(self, config: UpconvConfig, conditioner: Conditioner, image_size: int):
        super().__init__(conditioner)
        self.config = config
        self.image_size = image_size
        self.decoder = UpconvDecoder(config, conditioner.config.fused_dim, image_size)

    def decode(self, conditioning: torch.Tensor) -> torch.Tensor:
        rgb_logits, mask_logits = self.decoder(conditioning)
        if mask_logits is None:
            return torch.sigmoid(rgb_logits)
        return torch.sigmoid(torch.cat([rgb_logits, mask_logits], dim=1))

    def images(self, output: torch.Tensor) -> torch.Tensor:
        """Return RGB images `[B, 3, H, W]` in [0, 1] from the model output, composited on white when there is a mask."""
        if output.shape[1] == 4:
            return composite_on_white(output[:, :3], output[:, 3:])
        return output

    def loss_terms(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {"pixel": pixel_loss(output[:, :3], target, self.config.loss)}
        if self.config.mask:
            mask_target = foreground_mask(target, self.config.white_threshold)
            # binary_cross_entropy clamps its log terms at -100, so a saturated sigmoid gives no inf.
            terms["mask"] = self.config.mask_weight * F.binary_cross_entropy(output[:, 3:], mask_target)
        return terms

    def extra_meta(self) -> dict:
        return {"image_size": self.image_size, "mask": self.config.mask}


def build(config: UpconvConfig, conditioner: Conditioner, data_config) -> UpconvModel:
    return UpconvModel(config, conditioner, data_config.image_size)


HEAD = HeadSpec(name="upconv", domain="chairs", config_class=UpconvConfig, build=build)
