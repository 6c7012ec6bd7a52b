"""Data and models of a benchmark run, trained identically; also a torchrun entry point.

    python -m benchmarks.train --model sde-0.5 [run options]            # one process
    torchrun --nproc_per_node=2 -m benchmarks.train --model sde-0.5 ... # DDP (gloo on CPU)

trains one model of the run into ``DIR/checkpoints`` and records it, so that the main job
(``python -m benchmarks`` with the same options) uses it instead of training it again.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from neuralsde import ODEResNet, SDEResNet
from neuralsde.data import digits, image_folder, shapes
from neuralsde.train import evaluate, load_checkpoint, load_weights, train

from .config import Config, parse_args
from .store import Store

__all__ = ["Data", "build_model", "correct_pool", "load_data", "trained_model"]


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


def _stack(dataset: Dataset, indices) -> Tensor:
    return torch.stack([dataset[int(i)][0] for i in indices])


def load_data(cfg: Config, which: str = "main") -> Data:
    """The run's data set (``which="shapes"`` for the shapes with masks)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    if which == "shapes":
        full = shapes(cfg.shapes_n, size=cfg.shapes_size, seed=cfg.seed)
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
            _stack(train_set, pick),
            full.masks[:n_test],
        )
    if not cfg.imagenet:
        train_set, test_set = digits("train", seed=cfg.seed), digits("test", seed=cfg.seed)
        pick = torch.randperm(len(train_set), generator=gen)[: cfg.shap_baselines]
        return Data("digits", train_set, test_set, 1, 10, (0.0, 1.0), _stack(train_set, pick))
    test_set = image_folder(cfg.data, size=cfg.image_size)
    if cfg.eval_images and cfg.eval_images < len(test_set):
        test_set = Subset(test_set, torch.randperm(len(test_set), generator=gen)[: cfg.eval_images].tolist())
    train_set = image_folder(cfg.train_data, size=cfg.image_size) if cfg.train_data else None
    source = train_set if train_set is not None else test_set
    pick = torch.randperm(len(source), generator=gen)[: cfg.shap_baselines]
    num_classes = _weights_classes(cfg.weights) if cfg.weights else len(image_folder_classes(cfg.data))
    # Normalised ImageNet inputs span about [-2.12, 2.64].
    return Data("imagefolder", train_set, test_set, 3, num_classes, (-2.1179, 2.6400), _stack(source, pick))


@torch.no_grad()
def predictions(model: nn.Module, dataset, device: str, batch: int = 256) -> tuple[Tensor, Tensor]:
    """Predicted and true labels over a data set."""
    model.eval()
    preds, labels = [], []
    for items in DataLoader(dataset, batch_size=batch):
        preds.append(model(items[0].to(device)).argmax(1).cpu())
        labels.append(items[1])
    return torch.cat(preds), torch.cat(labels)


def correct_pool(models: dict[str, nn.Module], dataset, device: str) -> list[int]:
    """Indices of the test images every network classifies correctly."""
    ok = None
    for model in models.values():
        pred, label = predictions(model, dataset, device)
        ok = (pred == label) if ok is None else ok & (pred == label)
    return torch.nonzero(ok).flatten().tolist()


def image_folder_classes(root: str) -> list[str]:
    return sorted(p.name for p in os.scandir(root) if p.is_dir())


def _weights_classes(path: str) -> int:
    state = load_checkpoint(path)
    state = state.get("model", state)
    return int(state["fc.weight"].shape[0])


def build_model(cfg: Config, name: str, data: Data) -> nn.Module:
    """A fresh (or, for ImageNet, pretrained) ODE/SDE network of the run."""
    sigma = None if name.endswith("ode") else float(name.rsplit("-", 1)[1])
    kwargs = {} if sigma is None else dict(sigma=sigma, diffusion=cfg.diffusion)
    cls = ODEResNet if sigma is None else SDEResNet
    torch.manual_seed(cfg.seed)  # ODE and SDE networks start from the same weights
    if cfg.arch == "small" or data.name == "shapes":
        model = cls.small(
            in_channels=data.in_channels,
            num_classes=data.num_classes,
            widths=cfg.widths,
            blocks=cfg.blocks,
            method=cfg.method,
            **kwargs,
        )
    else:
        model = cls(cfg.arch, num_classes=data.num_classes, in_channels=data.in_channels, method=cfg.method, **kwargs)
        if cfg.weights:
            load_weights(model, cfg.weights)
    return model.to(cfg.device)


def trained_model(
    cfg: Config, store: Store, name: str, data: Data, *, epochs: int | None = None, progress: bool = True
) -> nn.Module:
    """The trained network ``name``: from its checkpoint, or trained now (resumably).

    ODE and SDE networks are trained by the same loop with the same data order, seed,
    optimizer and epochs; they differ only in the noise.
    """
    model = build_model(cfg, name, data)
    ckpt = store.checkpoint(name)
    epochs = cfg.epochs if epochs is None else epochs
    pretrained_only = cfg.imagenet and not cfg.train_data
    if pretrained_only and name != "ode":
        load_weights(model, cfg.sde_weights)
    if store.has("train", name) or pretrained_only:
        if ckpt.exists():
            model.load_state_dict(load_checkpoint(ckpt, map_location=cfg.device)["model"])
        store.cell("train", name, lambda: _record(cfg, model, data, [], "weights file"))
        return model.eval()
    start = time.perf_counter()
    history = train(
        model,
        data.train,
        epochs=epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        device=cfg.device,
        checkpoint=ckpt,
        progress=progress,
    )
    if dist.is_initialized() and dist.get_rank() != 0:
        return model.eval()
    store.cell(
        "train",
        name,
        lambda: {**_record(cfg, model, data, history, "trained"), "train_seconds": time.perf_counter() - start},
    )
    return model.eval()


def _record(cfg: Config, model: nn.Module, data: Data, history: list, source: str) -> dict:
    return {
        "source": source,
        "history": history,
        "test_accuracy": evaluate(model, data.test, device=cfg.device),
        "sigma": getattr(model, "sigma", 0.0),
        "diffusion": getattr(model, "diffusion", None),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main(argv: list[str] | None = None) -> None:
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", required=True, help="ode, sde-<sigma>, shapes-ode or shapes-sde-<sigma>")
    known, rest = pre.parse_known_args(argv)
    cfg, args = parse_args(rest, description=__doc__.split("\n\n")[0])
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        backend = "nccl" if cfg.device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        if cfg.device.startswith("cuda"):
            cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(cfg.device)
    try:
        store = Store(args.out, cfg) if not dist.is_initialized() or dist.get_rank() == 0 else None
        if dist.is_initialized():
            dist.barrier()
            store = store or Store(args.out, cfg)
        shapes_model = known.model.startswith("shapes-")
        data = load_data(cfg, "shapes" if shapes_model else "main")
        epochs = cfg.shapes_epochs if shapes_model else None
        trained_model(cfg, store, known.model, data, epochs=epochs)
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(f"{known.model}: test accuracy {store.get('train', known.model)['test_accuracy']:.4f}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
