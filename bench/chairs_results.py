"""PSNR and SSIM of a chair model on its training views and on its held-out views, with a baseline.

The baseline fills each held-out view with the real image of the same chair's
nearest training view: same elevation, closest azimuth on the circle (the
smaller azimuth on a tie). A model that generalises over the view should beat
it on held-out views. On training views the baseline would return the target
itself, so it is not shown there.

SSIM follows Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5,
K1 = 0.01, K2 = 0.03, data range 1, computed per channel and averaged. PSNR uses
data range 1.

Usage:
    python bench/chairs_results.py runs/chairs_64/checkpoints/latest.safetensors \
        --data-root data/chairs/rendered_chairs --out docs/img --grid-chairs 4
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from condgen.model import load_model
from condgen.registry import get_domain

log = logging.getLogger("bench.chairs_results")


def psnr(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image for `[B, 3, H, W]` tensors in [0, 1]."""
    mse = ((generated - real) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(1.0 / mse)


def ssim(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image for `[B, 3, H, W]` tensors in [0, 1]."""
    coordinates = torch.arange(11, dtype=torch.float64) - 5
    gauss = torch.exp(-(coordinates**2) / (2 * 1.5**2))
    gauss = gauss / gauss.sum()
    window = (gauss[:, None] * gauss[None, :]).to(torch.float32)
    channels = generated.shape[1]
    kernel = window.expand(channels, 1, 11, 11).contiguous()

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(generated), blur(real)
    sigma_xx = blur(generated * generated) - mu_x**2
    sigma_yy = blur(real * real) - mu_y**2
    sigma_xy = blur(generated * real) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_xx + sigma_yy + c2))
    return index.flatten(1).mean(1)


@torch.no_grad()
def generate(model, metadata: list[dict], batch_size: int = 64) -> torch.Tensor:
    names = model.conditioner.label_names
    outputs = []
    for start in range(0, len(metadata), batch_size):
        rows = metadata[start : start + batch_size]
        inputs = model.conditioner.encode_values({name: [row[name] for row in rows] for name in names})
        outputs.append(model(inputs).float().clamp(0, 1))
    return torch.cat(outputs)


def nearest_training_view(held_out: dict, training: list[dict]) -> int:
    candidates = [
        (min(abs(row["azimuth_deg"] - held_out["azimuth_deg"]) % 360, 360 - abs(row["azimuth_deg"] - held_out["azimuth_deg"]) % 360), row["azimuth_deg"], i)
        for i, row in enumerate(training)
        if row["chair"] == held_out["chair"] and row["elevation_deg"] == held_out["elevation_deg"]
    ]
    return min(candidates)[2]


def save_grid(path: Path, rows: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Save pairs of image rows, real above generated, as one PNG."""
    strips = []
    for real, generated in rows:
        strips.append(torch.cat(list(real), dim=2))
        strips.append(torch.cat(list(generated), dim=2))
    grid = torch.cat(strips, dim=1)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-root", help="override data.root of the stored recipe")
    parser.add_argument("--out", type=Path, default=Path("bench_out/chairs_results"), help="folder for the comparison grid")
    parser.add_argument("--grid-chairs", type=int, default=4, help="chairs shown in the grid")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    loaded = load_model(args.checkpoint, expect_domain="chairs")
    recipe = loaded.recipe
    if args.data_root:
        recipe.data.root = args.data_root
    train_set, held_out_set = get_domain(recipe.domain).build_datasets(recipe.data, recipe.seed)
    if held_out_set is None or len(held_out_set) == 0:
        raise SystemExit("the recipe has no held-out views; set data.holdout_every, e.g. data.holdout_every=4")

    started = time.monotonic()
    train_real = torch.stack([train_set[i]["image"] for i in range(len(train_set))])
    held_real = torch.stack([held_out_set[i]["image"] for i in range(len(held_out_set))])
    train_generated = generate(loaded.model, train_set.metadata)
    held_generated = generate(loaded.model, held_out_set.metadata)
    nearest = [nearest_training_view(row, train_set.metadata) for row in held_out_set.metadata]
    baseline = train_real[nearest]
    seconds = time.monotonic() - started

    print(f"checkpoint: {args.checkpoint} (step {loaded.meta['step']}); {len(train_set)} training views, {len(held_out_set)} held-out views; {seconds:.1f} s")
    print(f"{'system':<34} {'train PSNR':>10} {'train SSIM':>10} {'held-out PSNR':>13} {'held-out SSIM':>13}")
    print(f"{'model':<34} {psnr(train_generated, train_real).mean():>10.2f} {ssim(train_generated, train_real).mean():>10.4f} {psnr(held_generated, held_real).mean():>13.2f} {ssim(held_generated, held_real).mean():>13.4f}")
    print(f"{'nearest training view (baseline)':<34} {'-':>10} {'-':>10} {psnr(baseline, held_real).mean():>13.2f} {ssim(baseline, held_real).mean():>13.4f}")

    chairs = sorted({row["chair"] for row in held_out_set.metadata})[: args.grid_chairs]
    rows = []
    for chair in chairs:
        indices = [i for i, row in enumerate(held_out_set.metadata) if row["chair"] == chair and row["elevation_deg"] == 20.0][:8]
        rows.append((held_real[indices], held_generated[indices]))
    grid_path = args.out / f"chairs_heldout_{recipe.data.image_size}.png"
    save_grid(grid_path, rows)
    print(f"grid (for each chair: real held-out views above, generated below): {grid_path}")


if __name__ == "__main__":
    main()
