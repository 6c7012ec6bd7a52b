"""neuralsde.data: the embedded digits, the shapes with masks, ImageFolder."""

import pytest
import torch

from neuralsde.data import SHAPE_CLASSES, digits, image_folder, shapes


def test_digits_split_is_a_stratified_partition():
    train, test, everything = digits("train"), digits("test"), digits("all")
    assert len(everything) == 1797 and len(train) + len(test) == 1797
    x, y = everything.tensors
    assert x.shape == (1797, 1, 8, 8) and x.min() == 0 and x.max() <= 1
    # Every class is split 75/25 (rounded), and no image is in both parts.
    for c in range(10):
        n_test = int((test.tensors[1] == c).sum())
        n_all = int((y == c).sum())
        assert n_test == round(0.25 * n_all)
    train_rows = {tuple(r.tolist()) for r in train.tensors[0].flatten(1)}
    test_rows = [tuple(r.tolist()) for r in test.tensors[0].flatten(1)]
    duplicates_in_data = len(everything) - len({tuple(r.tolist()) for r in x.flatten(1)})
    assert sum(r in train_rows for r in test_rows) <= duplicates_in_data


def test_digits_split_follows_the_seed():
    a, b, c = digits("test", seed=0), digits("test", seed=0), digits("test", seed=1)
    assert torch.equal(a.tensors[0], b.tensors[0]) and not torch.equal(a.tensors[0], c.tensors[0])
    with pytest.raises(ValueError, match="split"):
        digits("validation")


def test_shapes_have_masks_on_the_objects():
    data = shapes(40, size=16, seed=3)
    assert len(data) == 40
    image, label, mask = data[0]
    assert image.shape == (1, 16, 16) and mask.dtype == torch.bool and 0 <= int(label) < len(SHAPE_CLASSES)
    counts = torch.bincount(data.labels, minlength=len(SHAPE_CLASSES))
    assert counts.max() - counts.min() <= 1  # balanced
    for img, _, m in (data[i] for i in range(40)):
        assert 4 <= m.sum() <= 0.6 * 256  # an object, not the whole image
        assert img[m].mean() > img[~m].mean() + 0.2  # brighter than the background
    again = shapes(40, size=16, seed=3)
    assert torch.equal(again.images, data.images) and torch.equal(again.masks, data.masks)
    assert len(data.classification()) == 40


def test_image_folder_with_imagenet_preprocessing(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 30), color=(50 * i, 100, 200)).save(tmp_path / cls / f"{i}.png")
    data = image_folder(tmp_path, size=24)
    x, y = data[3]
    assert len(data) == 4 and x.shape == (3, 24, 24) and y == 1
    # Normalised with the ImageNet statistics: the blue channel (200/255) maps to
    # (0.784 - 0.406) / 0.225.
    assert abs(x[2].mean().item() - (200 / 255 - 0.406) / 0.225) < 1e-3
    with pytest.raises(ValueError, match="not a directory"):
        image_folder(tmp_path / "missing")
