"""neuralsde.train: learning, atomic resumable checkpoints, weights files, DDP on gloo."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from helpers import tiny_model
from torch.utils.data import Subset, TensorDataset

from neuralsde import ODEResNet, SDEResNet
from neuralsde.data import digits
from neuralsde.train import (
    CheckpointDamaged,
    evaluate,
    load_checkpoint,
    load_weights,
    recalibrate_batchnorm,
    train,
)
from neuralsde.weights import state_checksum


def tiny(cls=SDEResNet, **kw):
    return tiny_model(cls, 0, num_classes=10, trained_bn=False, **kw)  # as constructed, to be trained


def subset(n=256):
    return Subset(digits("train"), range(n))


def test_training_learns_and_writes_a_safe_checkpoint(tmp_path):
    model = tiny(sigma=0.5)
    data = subset()
    before = evaluate(model, data)
    history = train(model, data, epochs=5, lr=1e-2, batch_size=32, checkpoint=tmp_path / "m.pt", progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert history[-1]["loss"] < history[0]["loss"]
    # From chance (~0.1) to well above it (measured 0.67 after 5 epochs).
    assert evaluate(model, data) > before + 0.3
    state = load_checkpoint(tmp_path / "m.pt")  # weights_only=True
    assert state["epoch"] == 5 and len(state["history"]) == 5
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize("cls", [ODEResNet, SDEResNet])
def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, cls):
    data = subset(128)
    whole = tiny(cls)
    train(whole, data, epochs=3, lr=3e-3, batch_size=32, progress=False)
    resumed = tiny(cls)
    train(resumed, data, epochs=2, lr=3e-3, batch_size=32, checkpoint=tmp_path / "c.pt", progress=False)
    fresh = tiny(cls)  # a new process: only the checkpoint carries the state over
    history = train(fresh, data, epochs=3, lr=3e-3, batch_size=32, checkpoint=tmp_path / "c.pt", progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    # Shuffling and noise follow (seed, epoch): the resumed run is the uninterrupted one.
    for p, q in zip(fresh.parameters(), whole.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_the_cosine_schedule_follows_the_step_and_resumes_exactly(tmp_path):
    data = subset(128)  # 4 steps an epoch
    whole = tiny(SDEResNet, sigma=0.5)
    kwargs = dict(lr=1e-2, batch_size=32, schedule="cosine", progress=False)
    train(whole, data, epochs=3, checkpoint=tmp_path / "w.pt", **kwargs)
    # The last step is step 11 of 12: lr = 1e-2 * (1 + cos(pi * 11 / 12)) / 2 (Adam keeps it in its state).
    last = load_checkpoint(tmp_path / "w.pt")["optimizer"]["param_groups"][0]["lr"]
    assert last == pytest.approx(1e-2 * (1 + math.cos(math.pi * 11 / 12)) / 2, rel=1e-12)
    kwargs["checkpoint"] = tmp_path / "r.pt"

    def stop(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # interrupted after 2 of 3 epochs
        train(tiny(SDEResNet, sigma=0.5), data, epochs=3, on_epoch=stop, **kwargs)
    fresh = tiny(SDEResNet, sigma=0.5)  # a new process: the schedule follows from the step alone
    train(fresh, data, epochs=3, **kwargs)
    for p, q in zip(fresh.parameters(), whole.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="schedule must be one of constant, cosine"):
        train(tiny(), data, epochs=1, schedule="linear", progress=False)


def test_a_resumed_run_uses_the_learning_rate_it_is_given(tmp_path):
    data, path = subset(64), tmp_path / "c.pt"
    train(tiny(), data, epochs=1, lr=1e-2, batch_size=32, progress=False, checkpoint=path)
    train(tiny(), data, epochs=2, lr=1e-3, batch_size=32, progress=False, checkpoint=path)
    # Not the 1e-2 that the optimizer's state was saved with.
    assert load_checkpoint(path)["optimizer"]["param_groups"][0]["lr"] == 1e-3


def test_recalibration_makes_the_running_statistics_those_of_the_final_weights():
    data = subset(96)
    model = tiny(ODEResNet)
    train(model, data, epochs=2, lr=1e-2, batch_size=32, progress=False)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    handle = first.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    weights = [p.detach().clone() for p in model.parameters()]
    recalibrate_batchnorm(model, data, batch_size=96)  # one batch: the running statistics are its own
    handle.remove()
    (x,) = seen
    # Float32 sums over 96 x 8 x 8 values per channel: agreement to round-off (1e-5 relative).
    torch.testing.assert_close(first.running_mean, x.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first.running_var, x.var(dim=(0, 2, 3), unbiased=True), rtol=1e-5, atol=1e-6)
    assert first.momentum == 0.1 and not model.training  # restored, and left in eval mode
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))  # the weights are untouched


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dataset=[]), "dataset is empty"),
        (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
        (dict(batch_size=-1), "batch_size must be an integer >= 1, got -1"),
        (dict(batch_size=2.5), "batch_size must be an integer >= 1, got 2.5"),
        (dict(seed=-1), "seed"),
        (
            dict(dataset=TensorDataset(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))),
            "expected images of shape",
        ),
    ],
    ids=["empty", "batch-0", "batch-negative", "batch-fraction", "seed", "wrong-shape"],
)
def test_a_refused_recalibration_changes_nothing(kwargs, message):
    model = tiny_model(SDEResNet, 0, num_classes=10, sigma=0.5)  # trained statistics, eval mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        recalibrate_batchnorm(model, **{"dataset": subset(8), **kwargs})
    assert not model.training  # the mode it had
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_recalibration_in_train_is_part_of_the_last_checkpoint(tmp_path):
    data = subset(96)
    model = tiny(SDEResNet, sigma=0.5)
    path = tmp_path / "c.pt"
    history = train(model, data, epochs=2, batch_size=32, recalibrate=True, progress=False, checkpoint=path)
    assert "recalibrated" not in history[0] and history[-1]["recalibrated"]
    again = tiny(SDEResNet, sigma=0.5)
    train(again, data, epochs=2, batch_size=32, progress=False)
    recalibrate_batchnorm(again, data, batch_size=32, seed=0)  # the same pass, the same noise
    state = load_checkpoint(path)["model"]
    for key, value in again.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_weights_file_from_torchvision_loads_into_the_twin(tmp_path):
    tv = torchvision.models.resnet18(num_classes=10)
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    twin = load_weights(ODEResNet("resnet18", num_classes=10), tmp_path / "resnet18.pth")
    assert torch.equal(twin.conv1.weight, tv.conv1.weight)
    with pytest.raises(ValueError, match="does not exist"):
        load_weights(twin, tmp_path / "nope.pth")


def test_a_checkpoint_whose_contents_changed_is_refused(tmp_path):
    data, path = subset(64), tmp_path / "c.pt"
    train(tiny(sigma=0.5), data, epochs=1, batch_size=32, checkpoint=path, progress=False)
    state = load_checkpoint(path)
    assert state["checksum"] == state_checksum(state)  # of the weights, the optimizer, the epoch, the history
    raw = bytearray(path.read_bytes())
    needle = state["model"]["fc.weight"].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    at = bytes(raw).find(needle)
    assert at > 0 and bytes(raw).find(needle, at + 1) < 0
    raw[at + len(needle) // 2] ^= 0x01  # one flipped bit in the weights, as a bad disk or copy would make
    path.write_bytes(bytes(raw))
    torch.load(path, weights_only=True)  # torch notices nothing
    with pytest.raises(CheckpointDamaged, match=f"checkpoint {path}: its checksum does not match its contents"):
        load_checkpoint(path)
    with pytest.raises(CheckpointDamaged):  # not resumed from damaged weights
        train(tiny(sigma=0.5), data, epochs=2, batch_size=32, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match=f"weights file {path}: its checksum does not match"):
        load_weights(tiny(sigma=0.5), path)
    # Checkpoints written before they carried a checksum still load.
    torch.save({k: v for k, v in state.items() if k != "checksum"}, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")["epoch"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        model = tiny(sigma=0.5)
        train(model, subset(128), epochs=1, lr=3e-3, batch_size=16, checkpoint=out / "ddp.pt", progress=False)
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(2)]
        dist.all_gather(gathered, flat)
        if rank == 0:
            torch.save(
                {
                    "r0": gathered[0],
                    "r1": gathered[1],
                    "start": torch.cat([p.detach().flatten() for p in tiny(sigma=0.5).parameters()]),
                },
                out / "params.pt",
            )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_data_parallel_on_two_gloo_processes(tmp_path):
    mp.spawn(_ddp_worker, args=(_free_port(), tmp_path), nprocs=2, join=True)
    params = torch.load(tmp_path / "params.pt", weights_only=True)
    # DDP averages gradients: both processes end with the same weights, which moved.
    torch.testing.assert_close(params["r0"], params["r1"])
    assert not torch.allclose(params["r0"], params["start"])
    assert load_checkpoint(tmp_path / "ddp.pt")["epoch"] == 1
