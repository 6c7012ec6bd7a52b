"""He et al.'s CIFAR ResNets as twins, their checkpoints, and CIFAR-10 in each of its forms."""

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT, randomize_batchnorm
from torch import nn

from neuralsde import ODEResNet, SDEResNet
from neuralsde.cifar import CIFAR10_CLASSES, cifar10, cifar10_source
from neuralsde.parts import CIFAR_ARCHS

SHARED = ROOT.parent / "shared" / "data"
RESNET20 = SHARED / "cifar-resnets" / "resnet20-12fca82f.th"
RESNET56 = SHARED / "cifar-resnets" / "resnet56-4bfd9763.th"
CIFAR_ZIP = SHARED / "cifar10" / "cifar10-jpeg.zip"


# -- a reference CIFAR ResNet, written from the architecture's description -------------
class _Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.pad = (c_out - c_in) // 2 if (stride != 1 or c_in != c_out) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class ReferenceCifarResNet(nn.Module):
    """3x3 stem (16), stages of 16/32/64 channels with n blocks, option A shortcuts, average pool, ``linear``."""

    def __init__(self, n, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        c = 16
        for i, width in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(_Block(c, width, 2 if (i > 0 and j == 0) else 1))
                c = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.avg_pool2d(out, out.shape[3]).flatten(1))


def _reference(arch, seed=0, num_classes=10):
    torch.manual_seed(seed)
    return randomize_batchnorm(ReferenceCifarResNet(CIFAR_ARCHS[arch], num_classes), seed).eval()


def _save_checkpoint(model, path):
    """As the public checkpoints are saved: DataParallel keys under 'state_dict', beside the best accuracy."""
    torch.save({"best_prec1": 91.0, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


# -- architecture ---------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(CIFAR_ARCHS))
def test_cifar_family_by_name(arch):
    model = ODEResNet(arch)
    n = CIFAR_ARCHS[arch]
    assert [len(stage.blocks) for stage in model.stages] == [n, n, n]
    assert [stage.num_continuous for stage in model.stages] == [n, n - 1, n - 1]  # option A blocks are transitions
    assert model.num_classes == 10 and model.fc.in_features == 64 and isinstance(model.maxpool, nn.Identity)
    # He et al., table 6: 6n + 2 layers; 0.27M parameters for ResNet-20, 0.85M for ResNet-56.
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert convs + 1 == 6 * n + 2
    params = sum(p.numel() for p in model.parameters())
    assert set(model.state_dict()) == {*_reference(arch).state_dict()} - {"linear.weight", "linear.bias"} | {
        "fc.weight",
        "fc.bias",
    }
    if arch == "resnet20":
        assert round(params / 1e6, 2) == 0.27
    if arch == "resnet56":
        assert round(params / 1e6, 2) == 0.85


@pytest.mark.parametrize("arch", ["resnet20", "resnet32"])
def test_checkpoint_converts_exactly(arch, tmp_path):
    ref = _reference(arch, seed=3)
    path = _save_checkpoint(ref, tmp_path / f"{arch}.th")
    twin = ODEResNet(arch, weights=path).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, expected = twin(x), ref(x)
    # One Euler step per block is the block itself: float32 round-off only.
    assert (out - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
    # A plain state dict with the original names loads as well, and so does the twin's own.
    torch.save(ref.state_dict(), tmp_path / "plain.pt")
    torch.save(twin.state_dict(), tmp_path / "own.pt")
    for file in ("plain.pt", "own.pt"):
        with torch.no_grad():
            again = ODEResNet(arch, weights=tmp_path / file).eval()(x)
        assert torch.equal(again, out)


def test_sde_twin_from_a_checkpoint_with_noise_per_stage_and_another_head(tmp_path):
    path = _save_checkpoint(_reference("resnet20", seed=1), tmp_path / "r20.th")
    sde = SDEResNet("resnet20", weights=path, sigma={"layer1": 0.5}, num_classes=4)
    assert sde.stage_sigmas == {"layer1": 0.5, "layer2": 0.0, "layer3": 0.0}
    assert sde.num_classes == 4 and sde.in_channels == 3
    ode = ODEResNet("resnet20", weights=path).eval()
    sde.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # noise off in eval: the same features as the ODE twin
        assert torch.allclose(sde.forward_features(x), ode.forward_features(x), atol=1e-6)
    gray = ODEResNet("resnet20", in_channels=1)
    assert gray.conv1.in_channels == 1 and gray(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_checkpoint_of_another_depth_or_family_is_refused_naming_what_fits(tmp_path):
    r32 = _save_checkpoint(_reference("resnet32"), tmp_path / "r32.th")
    with pytest.raises(ValueError, match=r"does not fit resnet20: .*missing keys|unexpected keys") as err:
        ODEResNet("resnet20", weights=r32)
    assert str(err.value).endswith("it fits resnet32: pass that architecture")
    with pytest.raises(ValueError, match="it fits resnet32") as err:
        ODEResNet("resnet18", weights=r32)
    torch.save(__import__("torchvision").models.resnet18(num_classes=10).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="does not fit resnet56: .*it fits resnet18"):
        ODEResNet("resnet56", weights=tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="resnet20 has no weights by name"):
        ODEResNet("resnet20", weights="DEFAULT")


def test_captum_layer_method_and_solver_on_a_cifar_twin():
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    model = randomize_batchnorm(ODEResNet("resnet20")).eval()
    x = torch.randn(2, 3, 32, 32)
    cam = LayerGradCam(model, model.layer3[-1]).attribute(x, target=1)
    assert cam.shape == (2, 1, 8, 8) and torch.isfinite(cam).all()
    with torch.no_grad():
        euler = model(x)
        model.set_solver(method="rk4", steps_per_block=2)
        rk4 = model(x)
    assert rk4.shape == euler.shape and not torch.equal(rk4, euler)  # another solver, other dynamics


# -- the shared pretrained checkpoints (present in CI) ---------------------------------
@pytest.mark.skipif(not RESNET20.exists(), reason="../shared/data is not here")
@pytest.mark.parametrize("path", [RESNET20, RESNET56], ids=["resnet20", "resnet56"])
def test_shared_checkpoints_convert_exactly(path):
    arch = path.name.split("-")[0]  # not a network's name: a checkpoint file of the shared data
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    ref = ReferenceCifarResNet(CIFAR_ARCHS[arch])
    ref.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=False)
    ref.eval()
    twin = ODEResNet(arch, weights=path).eval()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, expected = twin(x), ref(x)
    # The issue's criterion: equal to 1e-4 of the logits' scale (float32 round-off is far below).
    assert (out - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_ZIP.exists(), reason="../shared/data is not here")
def test_shared_resnet20_scores_on_every_tenth_jpeg_test_image():
    from torch.utils.data import Subset

    from neuralsde.train import evaluate

    test = cifar10(CIFAR_ZIP, "test")
    assert len(test) == 10000
    every_tenth = Subset(test, list(range(0, 10000, 10)))
    assert torch.bincount(test.labels[::10]).tolist() == [100] * 10
    accuracy = evaluate(ODEResNet("resnet20", weights=RESNET20), every_tenth)
    # Measured with the original network: 0.795 on these 1,000 lossy JPEGs (0.917 claimed on the originals).
    assert 0.77 <= accuracy <= 0.83


# -- CIFAR-10 in its three forms --------------------------------------------------------
def _pixels(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _torchvision_folder(root: Path, n_train=6, n_test=4):
    """A tiny cifar-10-batches-py with torchvision's file names, checksums aside (torchvision checks them)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for i, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]):
        batches[name] = (_pixels(n_train, i), [(i + k) % 10 for k in range(n_train)])
    batches["test_batch"] = (_pixels(n_test, 9), list(range(n_test)))
    for name, (pixels, labels) in batches.items():
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": pixels.transpose(0, 3, 1, 2).reshape(len(labels), -1), "labels": labels}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, fh)
    return folder, batches


def test_torchvision_format(tmp_path, monkeypatch):
    import torchvision.datasets.cifar

    folder, batches = _torchvision_folder(tmp_path)
    # torchvision checks each file's MD5; our tiny files have other checksums.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)
    for root in (tmp_path, folder):  # the folder holding cifar-10-batches-py, or the folder itself
        assert cifar10_source(root) == "torchvision"
        train, test = cifar10(root, "train", mean=None, std=None), cifar10(root, "test")
        assert len(train) == 30 and len(test) == 4
        x, y = train[7]
        expected = torch.from_numpy(batches["data_batch_2"][0][1]).permute(2, 0, 1).float() / 255
        assert torch.equal(x, expected) and int(y) == batches["data_batch_2"][1][1]
        x, _ = test[0]  # normalised with ImageNet's statistics by default
        raw = torch.from_numpy(batches["test_batch"][0][0]).permute(2, 0, 1).float() / 255
        assert torch.allclose(x[0], (raw[0] - 0.485) / 0.229, atol=1e-6)


def test_torchvision_format_damaged_and_no_download_unless_asked(tmp_path):
    folder, _ = _torchvision_folder(tmp_path)
    with pytest.raises(ValueError, match="incomplete or damaged") as err:  # torchvision's checksums fail
        cifar10(folder, "train")
    assert "\n" not in str(err.value)


def _image_folder(root: Path, per_class=2, split_sizes=None):
    from PIL import Image

    pixels = {}
    for split in ("train", "test"):
        for c, name in enumerate(CIFAR10_CLASSES[:3]):
            (root / split / name).mkdir(parents=True)
            for k in range(per_class):
                array = _pixels(1, 100 * c + k + (50 if split == "test" else 0))[0]
                Image.fromarray(array).save(root / split / name / f"{k:04d}.png")  # lossless
                pixels[split, c, k] = array
    return pixels


def test_image_folder_and_zip(tmp_path):
    root = tmp_path / "images"
    pixels = _image_folder(root)
    archive = tmp_path / "cifar.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(root.rglob("*.png")):
            z.write(f, "CIFAR-10-images/" + str(f.relative_to(root)))  # one folder above train/ and test/
    for source, kind in ((root, "folder"), (archive, "zip")):
        assert cifar10_source(source) == kind
        test = cifar10(source, "test", mean=None, std=None)
        assert len(test) == 6 and test.labels.tolist() == [0, 0, 1, 1, 2, 2]
        x, y = test[3]
        assert int(y) == 1 and torch.equal(x, torch.from_numpy(pixels["test", 1, 1]).permute(2, 0, 1).float() / 255)
        assert len(cifar10(source, "train")) == 6


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "nope", "no such file or folder"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "holds no cifar-10-batches-py, train/ or test/"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is a file but not a zip"),
        (lambda p: [(p / "d" / s / "kitten").mkdir(parents=True) for s in ("train", "test")] and p / "d", "'kitten'"),
        (lambda p: [(p / "d" / s).mkdir(parents=True) for s in ("train", "test")] and p / "d", "no class folders"),
    ],
    ids=["missing", "empty", "text-file", "unknown-class", "no-classes"],
)
def test_malformed_roots_get_one_line_naming_what_was_expected(tmp_path, make, match):
    root = make(tmp_path)
    with pytest.raises(ValueError, match=match) as err:
        cifar10(root, "test")
    assert "\n" not in str(err.value)


def test_image_of_another_size_is_named(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / split / "cat").mkdir(parents=True)
        Image.new("RGB", (40, 30)).save(tmp_path / split / "cat" / "0.png")
    with pytest.raises(ValueError, match=r"0\.png: expected a 32x32 image, got 40x30"):
        cifar10(tmp_path, "train")
