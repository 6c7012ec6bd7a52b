"""The data of a benchmark run: the digits (default), CIFAR-10, an ImageFolder, and the shapes with masks.

Every draw (the subsets, the DeepSHAP baselines) is seeded from ``--data-seed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from neuralsde.cifar import cifar10
from neuralsde.data import digits, image_folder, shapes

from .config import Config

__all__ = ["Data", "image_folder_classes", "load_data", "stack"]


@dataclass
class Data:
    """A run's data: training and test sets, DeepSHAP baselines, input facts."""

    name: str
    train: Dataset | None
    test: Dataset
    in_channels: int
    num_classes: int
    value_range: tuple[float, float]
    shap_baselines: Tensor
    masks: Tensor | None = None  # test masks (shapes)


def stack(dataset: Dataset, indices) -> Tensor:
    """The images of ``dataset`` at ``indices``, stacked into one batch."""
    return torch.stack([dataset[int(i)][0] for i in indices])


def load_data(cfg: Config, which: str = "main") -> Data:
    """The run's data set (``which="shapes"`` for the shapes with masks)."""
    gen = torch.Generator().manual_seed(cfg.data_seed)
    if which == "shapes":
        full = shapes(cfg.shapes_n, size=cfg.shapes_size, seed=cfg.data_seed)
        n_test = len(full) // 5
        test_idx, train_idx = range(n_test), range(n_test, len(full))
        train_set = Subset(full.classification(), train_idx)
        pick = torch.randperm(len(train_idx), generator=gen)[: cfg.shap_baselines]
        return Data(
            "shapes",
            train_set,
            Subset(full.classification(), test_idx),
            1,
            4,
            (0.0, 1.0),
            stack(train_set, pick),
            full.masks[:n_test],
        )
    if cfg.cifar:
        return _cifar10(cfg, gen)
    if not cfg.imagenet:
        train_set, test_set = digits("train", seed=cfg.data_seed), digits("test", seed=cfg.data_seed)
        pick = torch.randperm(len(train_set), generator=gen)[: cfg.shap_baselines]
        return Data("digits", train_set, test_set, 1, 10, (0.0, 1.0), stack(train_set, pick))
    test_set = image_folder(cfg.data, size=cfg.image_size)
    if cfg.eval_images and cfg.eval_images < len(test_set):
        test_set = Subset(test_set, torch.randperm(len(test_set), generator=gen)[: cfg.eval_images].tolist())
    train_set = image_folder(cfg.train_data, size=cfg.image_size) if cfg.train_data else None
    source = train_set if train_set is not None else test_set
    pick = torch.randperm(len(source), generator=gen)[: cfg.shap_baselines]
    num_classes = len(image_folder_classes(cfg.data))  # the weights' too (check_inputs)
    # Normalised ImageNet inputs span about [-2.12, 2.64].
    return Data("imagefolder", train_set, test_set, 3, num_classes, (-2.1179, 2.6400), stack(source, pick))


def _cifar10(cfg: Config, gen: torch.Generator) -> Data:
    """CIFAR-10 from ``--data-root``: ``--train-images`` training and ``--eval-images`` test images.

    Both subsets are seeded draws of ``--data-seed`` (all images where 0); the DeepSHAP
    baselines are drawn from the training images the networks are trained on.
    """
    train_full = cifar10(cfg.data_root, "train", download=cfg.download)
    test_full = cifar10(cfg.data_root, "test")
    train_set: Dataset = train_full
    if cfg.train_images and cfg.train_images < len(train_full):
        train_set = Subset(train_full, torch.randperm(len(train_full), generator=gen)[: cfg.train_images].tolist())
    test_set: Dataset = test_full
    if cfg.eval_images and cfg.eval_images < len(test_full):
        test_set = Subset(test_full, torch.randperm(len(test_full), generator=gen)[: cfg.eval_images].tolist())
    pick = torch.randperm(len(train_set), generator=gen)[: cfg.shap_baselines]
    return Data("cifar10", train_set, test_set, 3, 10, train_full.value_range, stack(train_set, pick))


def image_folder_classes(root: str) -> list[str]:
    """The class folders of an ImageFolder, in the order torchvision numbers them."""
    return sorted(p.name for p in os.scandir(root) if p.is_dir())
