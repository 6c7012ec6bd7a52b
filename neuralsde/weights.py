"""Weights files: what the library and the benchmark read as a network's weights.

[`read_weights`][neuralsde.weights.read_weights] takes a state dict saved with
``torch.save(model.state_dict(), path)``, a checkpoint of
[`neuralsde.train.train`][neuralsde.train.train], or a checkpoint holding its state dict
under ``"state_dict"`` (as the public CIFAR ResNet checkpoints do, saved from
DataParallel with ``module.`` prefixes), and refuses anything else with one
``ValueError`` naming the file (an empty, truncated or text file, a pickled whole model);
[`weights_mismatch`][neuralsde.weights.weights_mismatch] says how a state dict differs
from a torchvision architecture and which architectures it fits. Checkpoints carry a
checksum of their contents ([`state_checksum`][neuralsde.weights.state_checksum]).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from .parts import ARCHS, CIFAR_ARCHS, ResNetParts, Weights

__all__ = [
    "canonical_names",
    "checksum_problem",
    "is_weights_file",
    "parts_from_file",
    "read_weights",
    "state_checksum",
    "weights_mismatch",
]


#: What a weights file must hold, for messages.
_WANTED = (
    "expected a state dict (torch.save(model.state_dict(), path)), a checkpoint of neuralsde.train.train, "
    "or a checkpoint with its state dict under 'state_dict'"
)


def state_checksum(content: dict) -> str:
    """A SHA-256 of a checkpoint's content: every tensor's dtype, shape and bytes, and every other value.

    The entry ``"checksum"`` itself is left out, so a checkpoint can carry its own
    checksum. Tensors count by value, wherever they are (a checkpoint loaded onto a GPU
    has the checksum it had on the CPU); dictionaries by key, whatever their order.
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in content.items() if k != "checksum"})
    return h.hexdigest()


def _feed(h, value) -> None:
    if torch.is_tensor(value):
        t = value.detach().cpu().contiguous()
        h.update(f"tensor {t.dtype} {tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        h.update(f"dict {len(value)};".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, key)
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"sequence {len(value)};".encode())
        for item in value:
            _feed(h, item)
    else:
        h.update(f"{type(value).__name__} {value!r};".encode())


def checksum_problem(content: dict) -> str | None:
    """Why a checkpoint's content does not match its ``"checksum"``; None if it does or carries none."""
    stored = content.get("checksum")
    if stored is None:
        return None
    if stored != state_checksum(content):
        return "its checksum does not match its contents (changed or damaged after it was written)"
    return None


def canonical_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict under the library's (torchvision's) parameter names.

    A ``module.`` prefix on every key (a model saved from ``DataParallel`` or DDP) is
    dropped, and the classifier of He et al.'s CIFAR ResNets, ``linear``, becomes ``fc``.
    Other state dicts come back unchanged.
    """
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    if "fc.weight" not in state and "linear.weight" in state:
        state = {("fc." + k.removeprefix("linear.") if k.startswith("linear.") else k): v for k, v in state.items()}
    return dict(state)


def read_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """The state dict a weights file holds, under the library's names (``canonical_names``).

    The file may hold a plain state dict (e.g. torchvision's ``resnet50-*.pth``), a
    checkpoint of [`train`][neuralsde.train.train] (its ``"model"``, verified against the
    checkpoint's checksum), or a checkpoint with the state dict under ``"state_dict"``
    (e.g. ``resnet20-12fca82f.th`` of akamaster/pytorch_resnet_cifar10: ``module.``
    prefixes and a ``linear`` classifier). It is loaded onto the CPU with
    ``torch.load(..., weights_only=True)``.

    Raises:
        ValueError: naming the file, if it does not exist, is empty, is not a torch file
            (text, truncated, damaged), holds a pickled object such as a whole model,
            holds anything but a state dict, or is a checkpoint whose checksum fails.
    """
    if Path(path).is_dir():
        raise ValueError(f"weights file {os.fspath(path)} is a folder, not a file; {_WANTED}")
    if not Path(path).is_file():
        raise ValueError(f"weights file {os.fspath(path)} does not exist")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's own advice (weights_only=False) is not for this API: not shown
        raise ValueError(f"weights file {os.fspath(path)} {_unreadable(path, err)}; {_WANTED}") from None
    state = content
    if isinstance(content, dict) and isinstance(content.get("model"), dict):  # a checkpoint of train()
        problem = checksum_problem(content)
        if problem:
            raise ValueError(f"weights file {os.fspath(path)}: {problem}")
        state = content["model"]
    elif isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        state = content["state_dict"]
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items())
    ):
        raise ValueError(f"weights file {os.fspath(path)} holds {_described(state)}, not a state dict; {_WANTED}")
    return canonical_names(state)


def _unreadable(path, err: Exception) -> str:
    if os.path.getsize(path) == 0:
        return "is empty"
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    if isinstance(err, pickle.UnpicklingError) and found:
        return f"holds a pickled {found.group(1)} object (a whole model?), which is not loaded for safety"
    return f"is not a file written by torch.save, or is truncated or damaged ({type(err).__name__})"


def _described(value) -> str:
    if isinstance(value, dict):
        if not value:
            return "an empty dict"
        keys = ", ".join(map(repr, list(value)[:3])) + (", ..." if len(value) > 3 else "")
        return f"a dict of other values (keys {keys})"
    return f"a {type(value).__name__}"


#: Buffers that older releases of torch did not save (BatchNorm's batch counter): never missing.
_OPTIONAL = ".num_batches_tracked"


def _reference(arch: str, state: dict[str, Tensor]) -> dict[str, tuple[int, ...]]:
    """The parameter shapes of ``arch`` (torchvision's or a CIFAR ResNet) with the classes and channels of ``state``."""
    fc, conv1 = state.get("fc.weight"), state.get("conv1.weight")
    classes = int(fc.shape[0]) if fc is not None and fc.dim() == 2 else (10 if arch in CIFAR_ARCHS else 1000)
    with torch.device("meta"):
        if arch in CIFAR_ARCHS:
            model = ResNetParts.cifar(arch, num_classes=classes).as_module()
        else:
            model = torchvision.models.get_model(arch, weights=None, num_classes=classes)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith(_OPTIONAL)}
    if conv1 is not None and conv1.dim() == 4:  # another number of input channels is allowed
        out, _, kh, kw = shapes["conv1.weight"]
        shapes["conv1.weight"] = (out, int(conv1.shape[1]), kh, kw)
    return shapes


def _stages(keys: list[str]) -> str:
    return ", ".join(dict.fromkeys(k.split(".")[0] for k in keys))


def weights_mismatch(state: dict[str, Tensor], arch: str) -> tuple[str, list[str]] | None:
    """How a state dict differs from torchvision's ``arch``, or None if it fits.

    Any number of classes and of input channels fits (the head and the stem follow the
    weights); learned diffusion parameters (``".diffusion."``) and BatchNorm's batch
    counters are not compared.

    Returns:
        A description naming the stages of the missing, unexpected and differently shaped
        keys, and the architectures of ``ARCHS`` (torchvision's and the CIFAR ResNets)
        the state dict does fit.
    """
    got = {k: tuple(v.shape) for k, v in state.items() if ".diffusion." not in k and not k.endswith(_OPTIONAL)}
    ref = _reference(arch, state)
    missing = [k for k in ref if k not in got]
    unexpected = [k for k in got if k not in ref]
    shaped = [k for k in ref if k in got and got[k] != ref[k]]
    if not (missing or unexpected or shaped):
        return None
    what = []
    if missing:
        what.append(f"{len(missing)} missing keys in {_stages(missing)} (e.g. {missing[0]})")
    if unexpected:
        what.append(f"{len(unexpected)} unexpected keys in {_stages(unexpected)} (e.g. {unexpected[0]})")
    if shaped:
        k = shaped[0]
        what.append(
            f"{len(shaped)} keys of other shapes in {_stages(shaped)} "
            f"(e.g. {k}: {list(got[k])} in the file, {list(ref[k])} in {arch})"
        )
    fits = [a for a in ARCHS if a != arch and _reference(a, state) == got]
    return "; ".join(what), fits


def is_weights_file(weights: Weights) -> bool:
    """Whether ``weights`` names a path (a file, or a folder that ``read_weights`` refuses as one)."""
    return isinstance(weights, os.PathLike) or (isinstance(weights, str) and Path(weights).exists())


def parts_from_file(arch: str, path: str | os.PathLike) -> tuple[ResNetParts, dict[str, Tensor]]:
    """``arch`` (torchvision's or a CIFAR ResNet) with a file's weights; also the file's diffusion parameters."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; valid architectures: {', '.join(ARCHS)}")
    state = read_weights(path)
    mismatch = weights_mismatch(state, arch)
    if mismatch is not None:
        what, fits = mismatch
        hint = f"; it fits {' or '.join(fits)}: pass that architecture" if fits else ""
        raise ValueError(f"the state dict in {os.fspath(path)} does not fit {arch}: {what}{hint}")
    weights = {k: v for k, v in state.items() if ".diffusion." not in k}
    channels = int(state["conv1.weight"].shape[1])
    if arch in CIFAR_ARCHS:
        parts = ResNetParts.cifar(arch, in_channels=channels, num_classes=int(state["fc.weight"].shape[0]))
        parts.as_module().load_state_dict(weights)
        return parts, {k: v for k, v in state.items() if ".diffusion." in k}
    model = torchvision.models.get_model(arch, weights=None, num_classes=int(state["fc.weight"].shape[0]))
    if channels != model.conv1.in_channels:
        old = model.conv1
        model.conv1 = nn.Conv2d(
            channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding, bias=False
        )
    model.load_state_dict(weights)
    return ResNetParts.from_torchvision(model, arch), {k: v for k, v in state.items() if ".diffusion." in k}
