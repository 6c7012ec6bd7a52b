"""Data sets: embedded handwritten digits, procedural shapes with masks, ImageFolder.

* [`digits`][neuralsde.data.digits]: scikit-learn's ``load_digits`` (1797 real 8x8 handwritten digits,
  shipped inside scikit-learn: no download), scaled to ``[0, 1]``, split into train and
  test by a seeded, class-stratified permutation.
* [`shapes`][neuralsde.data.shapes]: procedurally generated grayscale images of one object (disc, square,
  triangle or cross) on a textured background, with the object's pixel mask, so that
  "the attribution is on the object" becomes a number ([`localisation`][neuralsde.metrics.localisation]).
* [`image_folder`][neuralsde.data.image_folder]: any ImageFolder tree (e.g. ImageNet validation) with
  torchvision's standard ImageNet preprocessing.
* [`cifar10`][neuralsde.cifar.cifar10]: CIFAR-10 from torchvision's format, an image folder
  with ``train/`` and ``test/``, or a zip of one (``neuralsde.cifar``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from .cifar import cifar10
from .validate import check_seed

__all__ = ["SHAPE_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "cifar10", "digits", "image_folder", "shapes"]

SHAPE_CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "cross")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def digits(split: str = "train", *, test_fraction: float = 0.25, seed: int = 0) -> TensorDataset:
    """The handwritten digits, as ``(image, label)`` pairs.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        test_fraction: fraction of each class held out for ``"test"``.
        seed: seed of the split.

    Returns:
        A TensorDataset of images ``(N, 1, 8, 8)`` in ``[0, 1]`` (float32) and labels
        ``(N,)`` (int64, 0 to 9).
    """
    from sklearn.datasets import load_digits

    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    raw = load_digits()
    images = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(raw.target, dtype=torch.int64)
    if split == "all":
        return TensorDataset(images, labels)
    gen = torch.Generator().manual_seed(check_seed(seed))
    test_idx = []
    for c in range(10):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        test_idx.append(idx[: round(test_fraction * len(idx))])
    test_mask = torch.zeros(len(labels), dtype=torch.bool)
    test_mask[torch.cat(test_idx)] = True
    keep = test_mask if split == "test" else ~test_mask
    return TensorDataset(images[keep], labels[keep])


def _shape_mask(kind: str, size: int, cx: float, cy: float, r: float, angle: float) -> Tensor:
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    # Rotate coordinates about the centre.
    dx, dy = xx - cx, yy - cy
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if kind == "disc":
        return dx**2 + dy**2 <= r**2
    if kind == "square":
        return (u.abs() <= r * 0.85) & (v.abs() <= r * 0.85)
    if kind == "triangle":
        # Equilateral, circumradius r: vertices (0, r), (+-r sqrt(3)/2, -r/2).
        k = math.sqrt(3)
        return (v >= -r / 2) & (k * u + v <= r) & (-k * u + v <= r)
    if kind == "cross":
        w = r * 0.35
        return ((u.abs() <= w) & (v.abs() <= r)) | ((v.abs() <= w) & (u.abs() <= r))
    raise ValueError(f"unknown shape {kind!r}; valid shapes: {', '.join(SHAPE_CLASSES)}")


class ShapesDataset(Dataset):
    """Images of one shape on a textured background, with the shape's mask.

    Items are ``(image, label, mask)``: image ``(1, S, S)`` in ``[0, 1]``, label an int
    (index into ``SHAPE_CLASSES``), mask ``(1, S, S)`` bool (True on the object).
    """

    def __init__(self, images: Tensor, labels: Tensor, masks: Tensor):
        self.images, self.labels, self.masks = images, labels, masks

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i], self.masks[i]

    def classification(self) -> TensorDataset:
        """The same images and labels without masks, for training."""
        return TensorDataset(self.images, self.labels)


def shapes(n: int = 2000, *, size: int = 16, seed: int = 0) -> ShapesDataset:
    """Procedurally generated shapes with ground-truth object masks.

    Each image holds one object (a disc, square, triangle or cross, class = kind) of
    random position, size, rotation and brightness on a background of smooth random
    texture plus pixel noise, so the class is decided by the object alone and the
    object's mask says where a faithful attribution should put its mass.

    Args:
        n: number of images (classes balanced, in random order).
        size: image side in pixels (16 to 64 are sensible).
        seed: seed of the generator; the same seed gives the same data set.

    Returns:
        A [`ShapesDataset`][neuralsde.data.ShapesDataset].
    """
    if n < 1 or size < 8:
        raise ValueError(f"need n >= 1 and size >= 8, got n={n}, size={size}")
    gen = torch.Generator().manual_seed(check_seed(seed))

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand((), generator=gen).item()

    labels = torch.arange(n) % len(SHAPE_CLASSES)
    labels = labels[torch.randperm(n, generator=gen)]
    images = torch.empty(n, 1, size, size)
    masks = torch.empty(n, 1, size, size, dtype=torch.bool)
    for i in range(n):
        r = uniform(0.2, 0.32) * size
        cx, cy = uniform(r + 0.5, size - r - 0.5), uniform(r + 0.5, size - r - 0.5)
        mask = _shape_mask(SHAPE_CLASSES[int(labels[i])], size, cx, cy, r, uniform(0, math.pi))
        coarse = torch.rand(1, 1, 4, 4, generator=gen)
        texture = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        background = 0.35 * texture[0, 0] + 0.08 * torch.randn(size, size, generator=gen)
        brightness = uniform(0.6, 1.0)
        img = torch.where(mask, brightness + 0.05 * torch.randn(size, size, generator=gen), background)
        images[i, 0] = img.clamp(0, 1)
        masks[i, 0] = mask
    return ShapesDataset(images, labels, masks)


def image_folder(root: str | Path, *, size: int = 224, resize: int | None = None):
    """An ImageFolder tree with torchvision's ImageNet evaluation preprocessing.

    Resize to ``resize`` (default ``size * 256 / 224``), centre-crop ``size``, convert to
    a tensor and normalise with the ImageNet mean and standard deviation.

    Args:
        root: a folder with one sub-folder of images per class.
        size: crop size.
        resize: shorter side after resizing.

    Raises:
        ValueError: if ``root`` is not a folder of class folders with images.
    """
    from torchvision import datasets, transforms

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory (expected an ImageFolder tree: one folder per class)")
    resize = resize or round(size * 256 / 224)
    transform = transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    try:
        return datasets.ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as err:
        raise ValueError(f"{root}: {err}") from err
