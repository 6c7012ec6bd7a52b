"""CIFAR-10, read from any of the forms it comes in, with no download unless asked.

[`cifar10(root, split)`][neuralsde.cifar.cifar10] reads

* torchvision's own format: the folder ``cifar-10-batches-py`` (or the folder holding
  it), as ``torchvision.datasets.CIFAR10(root, download=True)`` leaves it; with
  ``download=True`` torchvision fetches it into ``root`` first if it is not there;
* an image folder with ``train/<class>/*`` and ``test/<class>/*`` (one sub-folder per
  class, named as CIFAR-10's classes), e.g. the JPEG copy of CIFAR-10 unpacked;
* a zip of such a folder, read in place.

Images are held as ``uint8`` and normalised per item, by default with the ImageNet mean
and standard deviation, as He et al.'s CIFAR ResNets of akamaster/pytorch_resnet_cifar10
expect. Labels follow CIFAR-10's order, which is the alphabetical order of its class
names (``CIFAR10_CLASSES``). Anything that is not one of the three forms is refused with
one ``ValueError`` naming what was expected.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["CIFAR10_CLASSES", "ImageTensors", "cifar10", "cifar10_source"]

#: CIFAR-10's classes in label order (also their alphabetical order).
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_SPLITS = ("train", "test")
_IMAGE = re.compile(r"\.(jpe?g|png|bmp|gif|webp)$", re.IGNORECASE)
_EXPECTED = (
    "expected CIFAR-10 as torchvision's cifar-10-batches-py folder (or the folder holding it; download=True / "
    "--download fetches it there), an image folder with train/ and test/ (one sub-folder per class), or a zip of one"
)


class ImageTensors(Dataset):
    """Images held as ``uint8``, normalised when an item is read.

    Items are ``(image, label)``: image ``(C, H, W)`` float32, ``(x / 255 - mean) / std``
    per channel; label an int64 scalar.

    Args:
        images: ``(N, C, H, W)`` uint8.
        labels: ``(N,)`` int64.
        mean: per-channel mean of the normalisation (None: no normalisation, values in [0, 1]).
        std: per-channel standard deviation.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        if images.dtype != torch.uint8 or images.dim() != 4 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"expected uint8 images (N, C, H, W) and N labels, got {images.dtype} {tuple(images.shape)} "
                f"and {tuple(labels.shape)}"
            )
        self.images, self.labels = images, labels.to(torch.int64)
        channels = images.shape[1]
        self.mean = torch.tensor(mean if mean is not None else [0.0] * channels).view(-1, 1, 1)
        self.std = torch.tensor(std if std is not None else [1.0] * channels).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return (self.images[i].float() / 255 - self.mean) / self.std, self.labels[i]

    @property
    def value_range(self) -> tuple[float, float]:
        """The smallest and largest value an item can hold (pixel values 0 and 255, normalised)."""
        low = (0 - self.mean) / self.std
        high = (1 - self.mean) / self.std
        return float(low.min()), float(high.max())


def cifar10_source(root: str | os.PathLike) -> str:
    """Which form of CIFAR-10 ``root`` holds: ``"torchvision"``, ``"folder"`` or ``"zip"``.

    Raises:
        ValueError: if ``root`` does not exist or holds none of them.
    """
    path = Path(root)
    if not path.exists():
        raise ValueError(f"CIFAR-10 root {os.fspath(root)}: no such file or folder; {_EXPECTED}")
    if path.is_file():
        if zipfile.is_zipfile(path):
            return "zip"
        raise ValueError(f"CIFAR-10 root {os.fspath(root)} is a file but not a zip; {_EXPECTED}")
    if path.name == "cifar-10-batches-py" or (path / "cifar-10-batches-py").is_dir():
        return "torchvision"
    if all((path / split).is_dir() for split in _SPLITS):
        return "folder"
    raise ValueError(f"CIFAR-10 root {os.fspath(root)} holds no cifar-10-batches-py, train/ or test/; {_EXPECTED}")


def cifar10(
    root: str | os.PathLike,
    split: str = "train",
    *,
    download: bool = False,
    mean: Sequence[float] | None = (0.485, 0.456, 0.406),
    std: Sequence[float] | None = (0.229, 0.224, 0.225),
) -> ImageTensors:
    """CIFAR-10's training or test images, as ``(image, label)`` items.

    Args:
        root: torchvision's ``cifar-10-batches-py`` folder or the folder holding it, an
            image folder with ``train/`` and ``test/``, or a zip of such a folder.
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        download: if ``root`` holds no CIFAR-10, let torchvision download its format
            into ``root`` (the only case in which anything is downloaded).
        mean: per-channel mean of the normalisation (default ImageNet's, as the
            pretrained CIFAR ResNets of akamaster/pytorch_resnet_cifar10 expect); None
            for values in [0, 1].
        std: per-channel standard deviation of the normalisation.

    Returns:
        An [`ImageTensors`][neuralsde.cifar.ImageTensors] of ``(3, 32, 32)`` images, in
        the order of the source (an image folder: by class, then by file name).

    Raises:
        ValueError: for another split, or a root that holds none of the three forms, a
            class folder that is not one of CIFAR-10's, or an image that is not 32x32.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if download and not _holds_cifar(root):
        return _torchvision(root, split, download=True, mean=mean, std=std)
    source = cifar10_source(root)
    if source == "torchvision":
        return _torchvision(root, split, download=False, mean=mean, std=std)
    files = _zip_files(root, split) if source == "zip" else _folder_files(root, split)
    images, labels = _decode(files, root)
    return ImageTensors(images, labels, mean, std)


def _holds_cifar(root) -> bool:
    try:
        cifar10_source(root)
    except ValueError:
        return False
    return True


def _torchvision(root, split: str, *, download: bool, mean, std) -> ImageTensors:
    from torchvision.datasets import CIFAR10

    path = Path(root)
    parent = path.parent if path.name == "cifar-10-batches-py" else path
    try:
        data = CIFAR10(str(parent), train=split == "train", download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted."
        raise ValueError(
            f"CIFAR-10 root {os.fspath(root)}: torchvision's cifar-10-batches-py is incomplete or damaged ({err}); "
            "download it again (--download into an empty folder)"
        ) from None
    images = torch.from_numpy(np.ascontiguousarray(data.data)).permute(0, 3, 1, 2).contiguous()
    return ImageTensors(images, torch.tensor(data.targets, dtype=torch.int64), mean, std)


def _class_of(name: str, where: str) -> int:
    if name not in CIFAR10_CLASSES:
        raise ValueError(
            f"{where}: {name!r} is not one of CIFAR-10's classes; expected one folder per class, named "
            f"{', '.join(CIFAR10_CLASSES)}"
        )
    return CIFAR10_CLASSES.index(name)


def _folder_files(root, split: str) -> list[tuple[int, str, object]]:
    """``(label, name, opener)`` per image of ``root/split/<class>/``, by class and file name."""
    base = Path(root) / split
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"CIFAR-10 folder {base} has no class folders; {_EXPECTED}")
    files = []
    for name in classes:
        label = _class_of(name, os.fspath(base))
        for f in sorted((base / name).iterdir()):
            if f.is_file() and _IMAGE.search(f.name):
                files.append((label, os.fspath(f), f.read_bytes))
    return files


def _zip_files(root, split: str) -> list[tuple[int, str, object]]:
    """``(label, name, opener)`` per image under ``[prefix/]split/<class>/`` in the zip, by class and name."""
    archive = zipfile.ZipFile(root)
    pattern = re.compile(rf"^(.*?){split}/([^/]+)/([^/]+)$")
    found = []
    for name in archive.namelist():
        m = pattern.match(name)
        if m and _IMAGE.search(m.group(3)) and "/" not in m.group(1).rstrip("/"):
            found.append((m.group(1), m.group(2), name))
    if not found:
        raise ValueError(f"CIFAR-10 zip {os.fspath(root)} holds no images under {split}/<class>/; {_EXPECTED}")
    prefix = min(p for p, _, _ in found)
    files = []
    for p, cls, name in sorted(found, key=lambda t: (t[1], t[2])):
        if p == prefix:
            files.append((_class_of(cls, f"{os.fspath(root)}:{prefix}{split}"), name, _zip_reader(archive, name)))
    return files


def _zip_reader(archive: zipfile.ZipFile, name: str):
    return lambda: archive.read(name)


def _decode(files: list[tuple[int, str, object]], root) -> tuple[Tensor, Tensor]:
    from PIL import Image, UnidentifiedImageError

    if not files:
        raise ValueError(f"CIFAR-10 root {os.fspath(root)}: the class folders hold no images; {_EXPECTED}")
    images = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    for i, (_, name, read) in enumerate(files):
        try:
            with Image.open(io.BytesIO(read())) as img:
                pixels = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{name}: not a readable image ({type(err).__name__})") from None
        if pixels.shape != (32, 32, 3):
            raise ValueError(f"{name}: expected a 32x32 image, got {pixels.shape[1]}x{pixels.shape[0]}")
        images[i] = pixels
    labels = torch.tensor([label for label, _, _ in files], dtype=torch.int64)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels
