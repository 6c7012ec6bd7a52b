"""The networks of a benchmark run, trained identically; also a torchrun entry point.

    python -m benchmarks.train --model sde-0.5 [run options]            # one process
    torchrun --nproc_per_node=2 -m benchmarks.train --model sde-0.5 ... # DDP (gloo on CPU)

trains one model of the run, for each of the run's ``--seeds``, into ``DIR/checkpoints``
and records it, so that the main job (``python -m benchmarks`` with the same options) uses
it instead of training it again.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from neuralsde import ODEResNet, SDEResNet
from neuralsde.cifar import cifar10_source
from neuralsde.train import evaluate, load_weights, train
from neuralsde.weights import read_weights, weights_mismatch

from .cli import parse_args, threads
from .config import ACCURACY_OPTIONS, Config, digest
from .data import Data, image_folder_classes, load_data
from .networks import Network
from .store import FolderBusy, FolderUnusable, OtherOptions, Store

__all__ = [
    "accuracy",
    "build_model",
    "check_inputs",
    "correct_pool",
    "ddp_training",
    "fingerprint",
    "open_store",
    "starting_accuracy",
    "trained_model",
]


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


def check_inputs(cfg: Config) -> None:
    """Check an ImageFolder run's folders and weights files before anything is trained.

    The image folders must have classes (the same in ``--train-data`` as in ``--data``),
    and every weights file must hold a state dict that fits ``--arch``, with as many
    classes as the image folder. Otherwise: one line saying what does not fit, and exit
    status 2.
    """
    try:
        _check_inputs(cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _folder_classes(flag: str, root: str) -> list[str]:
    if not os.path.isdir(root):
        raise ValueError(f"{flag} {root} is not a folder (an ImageFolder: one sub-folder of images per class)")
    classes = image_folder_classes(root)
    if not classes:
        raise ValueError(f"{flag} {root} has no class folders (an ImageFolder: one sub-folder of images per class)")
    return classes


def _check_inputs(cfg: Config) -> None:
    if cfg.cifar:
        if not cfg.download:
            try:
                cifar10_source(cfg.data_root)
            except ValueError as err:
                raise ValueError(f"--data-root: {err}") from None
        _check_weights(cfg, 10)
        return
    if not cfg.imagenet:
        return
    classes = _folder_classes("--data", cfg.data)
    if cfg.train_data:
        train_classes = _folder_classes("--train-data", cfg.train_data)
        if train_classes != classes:
            first = next((a, b) for a, b in zip([*train_classes, None], [*classes, None]) if a != b)
            raise ValueError(
                f"--train-data {cfg.train_data} and --data {cfg.data} must hold the same class folders: "
                f"{len(train_classes)} and {len(classes)} folders, first difference {first[0]!r} / {first[1]!r}"
            )
    _check_weights(cfg, len(classes), f"--data {cfg.data} has {len(classes)} class folders")


def _check_weights(cfg: Config, classes: int, where: str = "CIFAR-10 has 10 classes") -> None:
    """Every weights file holds a state dict that fits ``--arch`` with ``classes`` classes and RGB input."""
    for opt in ("weights", "sde_weights"):
        path = getattr(cfg, opt)
        if not path:
            continue
        flag = "--" + opt.replace("_", "-")
        try:
            state = read_weights(path)
        except ValueError as err:
            raise ValueError(f"{flag}: {err}") from None
        mismatch = weights_mismatch(state, cfg.arch)
        if mismatch is not None:
            what, fits = mismatch
            hint = f"use --arch {fits[0]}" if fits else "use the --arch they were saved from"
            raise ValueError(
                f"{flag} {path} holds weights of another architecture than --arch {cfg.arch}: {what}; {hint}"
            )
        n, channels = int(state["fc.weight"].shape[0]), int(state["conv1.weight"].shape[1])
        if n != classes:
            raise ValueError(
                f"{flag} {path} has {n} classes, but {where}: the network's classes must be the data's, in the same "
                "order"
            )
        if channels != 3:
            raise ValueError(f"{flag} {path} takes images with {channels} channels, not RGB (3)")


def build_model(cfg: Config, network: Network, seed: int, data: Data) -> nn.Module:
    """A fresh (or, for ImageNet, pretrained) ``network`` of the run, initialised from ``seed``.

    Its noise (none, σ in every stage, or σ in some stages) is ``network.noise()``; a network
    with noise at attribution time only is built with it (its weights are the ODE network's).
    """
    sigma = network.noise()
    kwargs = {} if sigma is None else dict(sigma=sigma, diffusion=cfg.diffusion)
    cls = ODEResNet if sigma is None else SDEResNet
    torch.manual_seed(seed)  # ODE and SDE networks of one seed start from the same weights
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


def ddp_training(cfg: Config) -> bool:
    """Whether the ranks of a job train each network together (DDP): the ImageNet fine-tuning.

    Every other network is small enough to be trained whole by one rank, as one process
    would train it, so that the results do not depend on the number of ranks.
    """
    return cfg.imagenet and bool(cfg.train_data)


def trained_model(
    cfg: Config,
    store: Store,
    network: Network,
    seed: int,
    data: Data,
    *,
    progress: bool | None = None,
    distributed: bool = False,
) -> nn.Module:
    """``network`` trained with ``seed``: from its checkpoint, or trained now (resumably).

    ODE and SDE networks are trained by the same loop with the same initial weights, data
    order, optimizer and epochs for one seed; they differ only in the noise. A checkpoint
    is used only if it verifies (``Store.verified_checkpoint``); otherwise the network is
    trained again, continuing a verified unfinished checkpoint. ``progress`` (default: when
    stderr is a terminal) shows a bar per epoch. ``distributed``: train it across the process
    group (DDP), every process of the group calling this alike; else here alone, as one
    process would.
    """
    lead = not distributed or dist.get_rank() == 0
    if progress is None:
        progress = sys.stderr.isatty()
    name = network.name
    model = build_model(cfg, network, seed, data)
    identity = cfg.network(network, seed)
    meta = {"digest": digest(identity), "network": identity, "versions": store.versions}
    record = {"networks": {name: digest(identity)}}
    ckpt = store.checkpoint(name, seed)
    epochs = cfg.shapes_epochs if network.shapes else cfg.epochs
    if cfg.imagenet and not cfg.train_data:  # the weights files are the networks
        if not network.is_ode:
            load_weights(model, cfg.sde_weights)
        if lead:
            store.cell("train", f"s{seed}/{name}", lambda: _record([], "weights file"), depends=record)
        return model.eval()
    if not ckpt.exists() and store.path("train", f"s{seed}/{name}").exists():
        store.log(store.relative(ckpt), "missing; training again")
    state = store.verified_checkpoint(name, seed, identity)
    if state is not None and int(state.get("epoch", 0)) >= epochs:
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, KeyError) as err:
            store.reject(ckpt, f"its weights do not fit the network ({str(err).splitlines()[0][:120]})")
        else:
            store.cell("train", f"s{seed}/{name}", lambda: _record(state["history"], "trained"), depends=record)
            return model.eval()
        model = build_model(cfg, network, seed, data)
    start = time.perf_counter()
    history = train(
        model,
        data.train,
        epochs=epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        schedule=cfg.schedule,
        recalibrate=cfg.recalibrate,
        seed=seed,
        device=cfg.device,
        checkpoint=ckpt,
        progress=progress,
        meta=meta,
        distributed=distributed,
    )
    if not lead:
        return model.eval()
    result = {**_record(history, "trained"), "train_seconds": time.perf_counter() - start}
    store.put("train", f"s{seed}/{name}", result, depends=record)
    store.cell("train", f"s{seed}/{name}", lambda: result, depends=record)
    return model.eval()


def fingerprint(model: nn.Module) -> str:
    """A hash of a network's weights and buffers: measurements of other weights never mix."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def accuracy(cfg: Config, store: Store, network: Network, seed: int, model: nn.Module, data: Data) -> float:
    """The test accuracy of a network of the run (a measurement, stored like the others)."""
    name = network.name
    depends = {"networks": {name: fingerprint(model)}, "options": cfg.measurement(ACCURACY_OPTIONS)}
    cell = store.cell(
        "accuracy",
        f"s{seed}/{name}",
        lambda: {
            "model": name,
            "seed": seed,
            "test_accuracy": evaluate(model, data.test, device=cfg.device),
            "sigma": network.sigma,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        depends=depends,
    )
    return cell["test_accuracy"]


def starting_accuracy(cfg: Config, store: Store, data: Data) -> float | None:
    """The test accuracy of the weights every network starts from (``--weights``), before any training.

    Every twin built from them computes the same function in eval mode (an SDE network's
    noise is off), so this is each network's accuracy before fine-tuning. None for a
    run without ``--weights``. Stored as the cell ``start_accuracy/pretrained``, with a
    SHA-256 of the weights file.
    """
    if not cfg.weights:
        return None
    model = build_model(cfg, Network(), cfg.seeds[0], data).eval()
    depends = {"networks": {"pretrained": fingerprint(model)}, "options": cfg.measurement(ACCURACY_OPTIONS)}

    def compute() -> dict:
        return {
            "weights": os.path.basename(cfg.weights),
            "sha256": _file_sha256(cfg.weights),
            "test_accuracy": evaluate(model, data.test, device=cfg.device),
            "test_images": len(data.test),
        }

    return store.cell("start_accuracy", "pretrained", compute, depends=depends)["test_accuracy"]


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _record(history: list, source: str) -> dict:
    return {"source": source, "history": history, "epochs": len(history)}


def open_store(args, cfg: Config, networks: list[tuple[Network, int]] = ()) -> Store:
    """The run's store, for ``networks`` (``(network, seed)``, see ``Store``).

    A one-line error and exit status 2 if another run holds the folder, ``--out`` is a
    file or cannot be written, or the folder holds networks trained under other options.
    """
    try:
        return Store(args.out, cfg, restart=args.restart, retrain=args.retrain, networks=networks)
    except (FolderBusy, FolderUnusable, OtherOptions) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:  # e.g. a full disk, writing config.json
        print(f"error: --out {args.out}: {err.strerror or err}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    import argparse

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--model", required=True, help="ode, sde-<sigma>, shapes-ode or shapes-sde-<sigma>")
    known, rest = pre.parse_known_args(argv)
    cfg, args = parse_args(rest, description=__doc__.split("\n\n")[0])
    networks = {n.name: n for n in cfg.table_networks() + cfg.shape_networks()}
    if known.model not in networks:
        print(
            f"error: --model {known.model} is not a network of this run; valid: {', '.join(networks)}", file=sys.stderr
        )
        raise SystemExit(2)
    network = networks[known.model]
    check_inputs(cfg)
    if "WORLD_SIZE" in os.environ:
        from .ranks import init_group

        cfg.device = init_group(cfg.device, args.rank_timeout)
    try:
        with threads(cfg.threads):
            rank0 = not dist.is_initialized() or dist.get_rank() == 0
            store = open_store(args, cfg, [(network, seed) for seed in cfg.seeds]) if rank0 else None
            if dist.is_initialized():
                dist.barrier()
                store = store or Store(args.out, cfg, lock=False)
            data = load_data(cfg, network.data)
            for seed in cfg.seeds:
                model = trained_model(
                    cfg,
                    store,
                    network,
                    seed,
                    data,
                    progress=not args.quiet and sys.stderr.isatty(),
                    distributed=dist.is_initialized(),
                )
                if rank0:
                    acc = accuracy(cfg, store, network, seed, model, data)
                    print(f"{known.model} (seed {seed}): test accuracy {acc:.4f}")
            store.close()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
