"""Noise-injected training, checkpoints and distributed data parallelism.

ODE and SDE models are trained by the same loop (the paper: Adam, learning rate 1e-4,
cross-entropy); an SDE model draws its noise because it is in train mode. Checkpoints
hold the weights, the optimizer, the epoch and the history, and a checksum of all of it;
they are written to a temporary file and renamed into place after every epoch, and a run
given an existing checkpoint continues after its last finished epoch. They load with
``torch.load(..., weights_only=True)``, and a checkpoint whose contents no longer match
its checksum is refused (``CheckpointDamaged``).

Under ``torchrun`` (or any initialised ``torch.distributed`` process group) the model is
wrapped in DistributedDataParallel, each process reads its shard of every epoch
(DistributedSampler) and draws its own noise, and rank 0 writes the checkpoints. The
``gloo`` backend runs this on CPUs, ``nccl`` on GPUs.
"""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .models import ODEResNet
from .validate import check_count, check_seed
from .weights import checksum_problem, read_weights, state_checksum, weights_mismatch

__all__ = [
    "CheckpointDamaged",
    "evaluate",
    "load_checkpoint",
    "load_weights",
    "recalibrate_batchnorm",
    "save_checkpoint",
    "train",
]

#: Learning-rate schedules of ``train``: constant, or a cosine decay to 0 over all steps.
SCHEDULES = ("constant", "cosine")


class CheckpointDamaged(ValueError):
    """A checkpoint's contents do not match the checksum it was written with."""


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def save_checkpoint(path: str | os.PathLike, **content) -> None:
    """Write ``content`` (tensors, state dicts, numbers, strings) atomically to ``path``.

    The file also holds ``"checksum"``, a SHA-256 of the content
    ([`state_checksum`][neuralsde.weights.state_checksum]), which
    [`load_checkpoint`][neuralsde.train.load_checkpoint] verifies.
    """
    content = {k: v for k, v in content.items() if k != "checksum"}
    content["checksum"] = state_checksum(content)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Serialise to memory first: torch.save names the archive after the file it writes,
    # which would make the bytes depend on the temporary name.
    buffer = io.BytesIO()
    torch.save(content, buffer)
    try:
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint written by [`save_checkpoint`][neuralsde.train.save_checkpoint] (``weights_only=True``).

    Raises:
        CheckpointDamaged: (a ValueError) if its contents do not match its checksum.
            Checkpoints written before checkpoints carried one load unverified.
    """
    content = torch.load(path, map_location=map_location, weights_only=True)
    problem = checksum_problem(content) if isinstance(content, dict) else None
    if problem:
        raise CheckpointDamaged(f"checkpoint {os.fspath(path)}: {problem}")
    return content


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load weights from a file into ``model``.

    The file may hold a plain state dict (e.g. torchvision's ``resnet50-*.pth``, which
    an ODE/SDE twin loads unchanged) or a checkpoint of [`train`][neuralsde.train.train]
    (its ``"model"``): the files ``ODEResNet(arch, weights=path)`` takes
    ([`read_weights`][neuralsde.weights.read_weights]).

    Raises:
        ValueError: naming the file, if it does not exist, holds no state dict (a
            whole pickled model, text, a damaged file...), or its weights do not fit
            ``model``.
    """
    state = read_weights(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        what = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]  # the first problem
        if isinstance(model, ODEResNet) and model.arch not in ("small", "torchvision"):
            mismatch = weights_mismatch(state, model.arch)
            if mismatch is not None:
                what = mismatch[0] + (f"; it fits {' or '.join(mismatch[1])}" if mismatch[1] else "")
        raise ValueError(f"the weights in {os.fspath(path)} do not fit the {type(model).__name__}: {what}") from None
    return model


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, device="cpu") -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``(image, label, ...)`` items."""
    training = model.training
    model.eval()
    correct = total = 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        x, y = batch[0].to(device), batch[1].to(device)
        correct += (model(x).argmax(dim=1) == y).sum().item()
        total += len(y)
    model.train(training)
    return correct / max(total, 1)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 256, seed: int = 0, device="cpu"
) -> nn.Module:
    """Recompute every BatchNorm layer's running statistics for the model's final weights.

    During training the running mean and variance are exponential averages over batches
    taken while the weights still move; when they move fast (a large learning rate, the
    last epochs of a short run), the averages lag behind, and the network in eval mode is
    much worse than in train mode. This resets them and recomputes them over one pass of
    ``dataset`` (in order, ``batch_size`` items a batch) as the average of the batches'
    means and variances, every batch counting once. Under DDP every process makes the
    same pass, so the statistics agree across processes. The model runs in train
    mode, so an SDE model draws its noise as in training, from torch's generator seeded
    with ``seed``; the caller's random state is restored afterwards. The weights are not
    changed; the model is left in eval mode.

    Raises:
        ValueError: for a ``batch_size`` that is not an integer >= 1, an invalid seed, or
            an empty data set, before anything changes. If the pass itself fails (items
            the model cannot take), every statistic and the model's mode are restored
            before the error propagates.
    """
    batch_size = check_count(batch_size, "batch_size", 1)
    seed = check_seed(seed)
    try:
        size = len(dataset)
    except TypeError:
        raise ValueError(
            f"dataset must be a sized data set of (image, label) items, got {type(dataset).__name__}"
        ) from None
    if size == 0:
        raise ValueError("dataset is empty: there is nothing to recompute BatchNorm's statistics from")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    # What a failure part-way restores: every statistic and the model's mode.
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum) for m in norms]
    training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    model.train()
    device = torch.device(device)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for batch in DataLoader(dataset, batch_size=batch_size):
                model(batch[0].to(device))
    except BaseException:
        for m, (mean, var, count, momentum) in zip(norms, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
            m.momentum = momentum
        model.train(training)
        raise
    for m, (_, _, _, momentum) in zip(norms, saved):
        m.momentum = momentum
    return model.eval()


def train(
    model: nn.Module,
    train_set: Dataset,
    *,
    epochs: int,
    lr: float = 1e-4,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    recalibrate: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    checkpoint: str | os.PathLike | None = None,
    eval_set: Dataset | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict], None] | None = None,
    meta: dict | None = None,
    distributed: bool | None = None,
) -> list[dict]:
    """Train with Adam and cross-entropy; resume from ``checkpoint`` if it exists.

    At the start of every epoch torch's global generator is seeded from
    ``(seed, epoch, rank)``, so the shuffling and the noise of an epoch do not depend on
    what ran before it (a resumed run repeats an uninterrupted one exactly).

    Args:
        model: the network (an SDE model draws noise in train mode).
        train_set: items ``(image, label, ...)``.
        epochs: total epochs (a resumed run does the remaining ones).
        lr: Adam's learning rate (the paper: 1e-4).
        batch_size: examples per step and process.
        weight_decay: Adam's weight decay.
        schedule: ``"constant"``, or ``"cosine"``: the learning rate at step t of T (all
            epochs' steps) is ``lr * (1 + cos(pi * t / T)) / 2``. It depends on the step
            alone, so a resumed run follows it exactly.
        recalibrate: after the last epoch, recompute BatchNorm's running statistics for
            the final weights ([`recalibrate_batchnorm`][neuralsde.train.recalibrate_batchnorm],
            one pass over ``train_set`` seeded from ``seed``); the last checkpoint holds them.
        seed: seeds the shuffling and, per process, the noise.
        device: where to train.
        checkpoint: file written after every epoch and read at the start.
        eval_set: if given, the accuracy on it is recorded after every epoch.
        progress: show a progress bar (rank 0).
        on_epoch: called with ``(epoch, record)`` after every epoch (rank 0).
        meta: saved in every checkpoint as ``"meta"`` (e.g. what the training depends on),
            for the caller to check before resuming from it; not checked here.
        distributed: train with DistributedDataParallel across the process group's
            processes (default: whenever a group of more than one process is initialised).
            ``False`` trains the whole model in this process alone, as a process with no
            group would (same seeds, same numbers), and writes its checkpoint itself: how
            the processes of one job share out small networks.

    Returns:
        The history: one record per epoch (``epoch``, ``loss``, ``train_accuracy``,
        ``eval_accuracy`` when an eval set is given).
    """
    from tqdm import tqdm

    epochs = check_count(epochs, "epochs", 1)
    seed = check_seed(seed)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    device = torch.device(device)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[dict] = []
    start = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = list(state["history"])
        start = int(state["epoch"])
        for group in optimizer.param_groups:  # this call's lr (the cosine schedule sets its own per step)
            group["lr"] = lr
    distributed = _world() > 1 if distributed is None else bool(distributed) and _world() > 1
    rank = _rank() if distributed else 0  # a model trained alone is trained as rank 0 of one
    net = model
    if distributed:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    sampler = DistributedSampler(train_set, shuffle=True, seed=seed) if distributed else None
    show = progress and rank == 0
    for epoch in range(start, epochs):
        # Shuffling and noise follow (seed, epoch, rank) alone, so a resumed run repeats
        # exactly what an uninterrupted one does; every process draws its own noise.
        torch.manual_seed(((seed * 1_000_003 + epoch) * 1009 + rank) % 2**63)
        net.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
            loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler)
        else:
            gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
            loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=gen)
        total_loss = correct = seen = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not show, file=sys.stderr)
        steps = epochs * len(loader)
        for i, batch in enumerate(bar):
            if schedule == "cosine":
                for group in optimizer.param_groups:
                    group["lr"] = lr * (1 + math.cos(math.pi * (epoch * len(loader) + i) / steps)) / 2
            x, y = batch[0].to(device), batch[1].to(device)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}")
        record = {"epoch": epoch + 1, "loss": total_loss / seen, "train_accuracy": correct / seen}
        if recalibrate and epoch + 1 == epochs:
            recalibrate_batchnorm(model, train_set, batch_size=batch_size, seed=seed, device=device)
            record["recalibrated"] = True
        if eval_set is not None and rank == 0:
            record["eval_accuracy"] = evaluate(model, eval_set, device=device)
        history.append(record)
        if rank == 0:
            if checkpoint is not None:
                save_checkpoint(
                    checkpoint,
                    model=model.state_dict(),
                    optimizer=optimizer.state_dict(),
                    epoch=epoch + 1,
                    history=history,
                    **({} if meta is None else {"meta": meta}),
                )
            if on_epoch is not None:
                on_epoch(epoch + 1, record)
        if distributed:
            dist.barrier()
    model.eval()
    return history
