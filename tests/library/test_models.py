"""neuralsde.models: drop-in equivalence with torchvision, weights, SDE modes, errors."""

import pytest
import torch
import torch._dynamo
import torchvision
from helpers import randomize_batchnorm
from torch import nn

from neuralsde import ODEResNet, SDEResNet, SolverError
from neuralsde.models import TORCHVISION_ARCHS

# Deep or wide architectures take seconds to build; they are still checked.
SLOW_ARCHS = {"resnet101", "resnet152", "wide_resnet101_2", "resnext101_32x8d", "resnext101_64x4d"}


def tv_model(name, randomize_bn, num_classes=10, seed=0):
    torch.manual_seed(seed)
    return randomize_bn(torchvision.models.get_model(name, num_classes=num_classes), seed).eval()


@pytest.mark.parametrize(
    "arch", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW_ARCHS else a for a in TORCHVISION_ARCHS]
)
def test_euler_one_step_per_block_reproduces_torchvision(arch, randomize_bn):
    tv = tv_model(arch, randomize_bn)
    for twin in (ODEResNet.from_torchvision(tv), SDEResNet.from_torchvision(tv, sigma=0.5)):
        assert not twin.training  # the mode is carried over
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            ref, out = tv(x), twin(x)
        # float32: x + 1.0 * (block(x) - x) is block(x) to a few ulps per block; the
        # issue's bound is 1e-5 of the logit scale.
        scale = ref.abs().max().item()
        assert (out - ref).abs().max().item() <= 1e-5 * scale, arch
    assert set(twin.state_dict()) == set(tv.state_dict())


def test_built_by_name_has_torchvision_structure_and_weights_move_both_ways(randomize_bn):
    tv = tv_model("resnet50", randomize_bn)
    ode = ODEResNet("resnet50", num_classes=10).eval()
    ode.load_state_dict(tv.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ode(x), tv(x), rtol=1e-5, atol=1e-5 * tv(x).abs().max().item())
    back = torchvision.models.resnet50(num_classes=10).eval()
    with torch.no_grad():
        for p in ode.parameters():
            p.add_(0.01)  # make the twin's weights its own
    back.load_state_dict(ode.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(back(x), ode(x), rtol=1e-5, atol=1e-5 * ode(x).abs().max().item())


def test_solver_is_a_constructor_argument_and_can_be_changed(randomize_bn):
    tv = tv_model("resnet18", randomize_bn)
    ode = ODEResNet.from_torchvision(tv, method="rk4", steps_per_block=2)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        fine = ode(x)
    stats = ode.solver_stats()
    assert (stats["layer1"].steps, stats["layer1"].nfe) == (4, 16)  # 2 blocks x 2 steps x 4 stages
    assert (stats["layer2"].steps, stats["layer2"].nfe) == (2, 8)  # block 0 is a transition
    ode.set_solver(method="euler", steps_per_block=1)
    with torch.no_grad():
        torch.testing.assert_close(ode(x), tv(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(fine, tv(x), rtol=1e-3, atol=1e-3)  # finer dynamics differ
    ode.set_solver(method="dopri5", rtol=1e-3, atol=1e-4)
    with torch.no_grad():
        assert torch.isfinite(ode(x)).all()
    assert ode.solver_stats()["layer1"].method == "dopri5"
    with pytest.raises(ValueError, match="valid ODE methods"):
        ode.set_solver(method="milstein")
    assert ode.method == "dopri5"


@pytest.mark.parametrize("size, channels", [(8, 1), (16, 3), (32, 3)])
def test_small_cifar_style_net(size, channels):
    torch.manual_seed(0)
    for cls in (ODEResNet, SDEResNet):
        net = cls.small(in_channels=channels, num_classes=7, widths=(8, 16), blocks=2)
        out = net(torch.randn(3, channels, size, size))
        assert out.shape == (3, 7) and torch.isfinite(out).all()
    assert [s.continuous for s in net.stages] == [[True, True], [False, True]]


def test_inputs_and_arguments_are_validated():
    net = ODEResNet.small(in_channels=1, num_classes=10)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, H, W\), got \(1, 8, 8\)"):
        net(torch.randn(1, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\), got \(2, 3, 8, 8\)"):
        net(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="valid architectures: resnet18"):
        ODEResNet("resnet19")
    with pytest.raises(ValueError, match="valid ODE methods"):
        ODEResNet.small(method="euler_maruyama")
    with pytest.raises(ValueError, match="valid SDE methods"):
        SDEResNet.small(method="rk4")
    with pytest.raises(ValueError, match="valid diffusions"):
        SDEResNet.small(diffusion="white")
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        SDEResNet.small(sigma=-0.5)
    with pytest.raises(ValueError, match="element-wise"):
        SDEResNet.small(diffusion="normalized", method="milstein")
    with pytest.raises(ValueError, match="torchvision.models.ResNet"):
        ODEResNet.from_torchvision(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="ODE stages only"):
        SDEResNet.small(adjoint=True)


def test_non_finite_forward_raises_solver_error_naming_the_stage():
    net = ODEResNet.small(in_channels=1).eval()
    with torch.no_grad():
        net.layer2[1].bn1.weight.fill_(float("inf"))
    with pytest.raises(SolverError, match="stage 'layer2'"):
        net(torch.randn(2, 1, 8, 8))


def test_sde_noise_modes(randomize_bn):
    tv = tv_model("resnet18", randomize_bn)
    sde = SDEResNet.from_torchvision(tv, sigma=0.5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # eval(): noise off, the network is the ODE network.
        torch.testing.assert_close(sde(x), tv(x), rtol=1e-5, atol=1e-5)
        # train(): noise on, drawn from torch's generator. BatchNorm would also change in
        # train mode, so keep it in eval mode to see the noise alone.
        sde.train()
        for m in sde.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        torch.manual_seed(1)
        a = sde(x)
        torch.manual_seed(1)
        b = sde(x)
        c = sde(x)
        assert torch.equal(a, b) and not torch.allclose(a, c)
        assert sde.solver_stats()["layer1"].nfe_diffusion == 2
        # eval() with Monte Carlo: the mean of K noisy forwards.
        sde.eval().set_noise(eval_samples=3)
        torch.manual_seed(2)
        mc = sde(x)
        sde.train()
        for m in sde.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        torch.manual_seed(2)
        manual = torch.stack([sde(x) for _ in range(3)]).mean(0)
        torch.testing.assert_close(mc, manual, rtol=0, atol=0)


def test_set_noise_changes_sigma_and_kind():
    sde = SDEResNet.small(sigma=0.1)
    sde.set_noise(sigma=0.75)
    assert sde.sigma == 0.75 and all(s.diffusion.sigma == 0.75 for s in sde.stages)
    sde.set_noise(diffusion="multiplicative").set_solver(method="milstein")
    assert all(s.diffusion.kind == "multiplicative" for s in sde.stages)
    with pytest.raises(ValueError, match="element-wise"):
        sde.set_noise(diffusion="normalized")  # Milstein cannot take it
    assert sde.diffusion == "multiplicative"
    with pytest.raises(ValueError, match="eval_samples"):
        sde.set_noise(eval_samples=-1)


def test_learned_diffusion_state_dict(randomize_bn):
    tv = tv_model("resnet18", randomize_bn)
    sde = SDEResNet("resnet18", num_classes=10, diffusion="learned", sigma=0.2, method="milstein")
    extra = {k for k in sde.state_dict() if ".diffusion." in k}
    assert extra == {f"layer{i}.diffusion.{p}" for i in range(1, 5) for p in ("slope", "offset")}
    sde.load_state_dict(tv.state_dict())  # a torchvision state dict has no diffusion keys
    with pytest.raises(RuntimeError, match="unexpected keys"):
        sde.load_state_dict({**tv.state_dict(), "bogus": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="missing keys"):
        sde.load_state_dict({k: v for k, v in tv.state_dict().items() if k != "fc.bias"})


# -- pretrained starts (weights come from the local_weights fixture: nothing is downloaded)
def tv_pretrained(arch, name):
    weights = torchvision.models.get_model_weights(arch)[name]
    return torchvision.models.get_model(arch, weights=weights).eval()


@pytest.mark.parametrize("cls", [ODEResNet, SDEResNet])
def test_weights_by_enum_or_by_name_are_torchvisions(local_weights, cls):
    from torchvision.models import ResNet18_Weights

    tv = tv_pretrained("resnet18", "IMAGENET1K_V1")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = tv(x)
        for weights in (ResNet18_Weights.IMAGENET1K_V1, "IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.DEFAULT"):
            twin = cls("resnet18", weights=weights, progress=False).eval()
            assert twin.num_classes == 1000
            # The same network (one Euler step per block): float32 round-off, as above.
            torch.testing.assert_close(twin(x), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert {request[:2] for request in local_weights} == {("resnet18", "IMAGENET1K_V1")}
    assert local_weights[-1][2]["progress"] is False  # passed on to torchvision


def test_pretrained_with_new_classes_and_channels_replaces_head_and_stem(local_weights):
    tv = tv_pretrained("resnet18", "IMAGENET1K_V1")
    torch.manual_seed(0)
    ode = ODEResNet("resnet18", weights="DEFAULT", num_classes=10, in_channels=1)
    assert (ode.fc.out_features, ode.num_classes, ode.conv1.in_channels) == (10, 10, 1)
    assert ode.conv1.weight.shape == (64, 1, 7, 7) and ode.conv1.stride == (2, 2)
    kept = {k: v for k, v in tv.state_dict().items() if not k.startswith(("fc.", "conv1."))}
    state = ode.state_dict()
    assert all(torch.equal(state[k], v) for k, v in kept.items())  # the body is pretrained
    assert ode(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_weights_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    tv = randomize_batchnorm(torchvision.models.resnet18(num_classes=7)).eval()
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    for weights in (tmp_path / "resnet18.pth", str(tmp_path / "resnet18.pth")):
        sde = SDEResNet("resnet18", weights=weights).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(sde(x), tv(x), rtol=1e-5, atol=1e-5 * tv(x).abs().max().item())
    torch.save({"not": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="state dict"):
        ODEResNet("resnet18", weights=tmp_path / "other.pth")


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory):
    """A resnet18 (7 classes) as a state dict and as a checkpoint of train(), and files holding no state dict."""
    from neuralsde.train import save_checkpoint

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    tv = randomize_batchnorm(torchvision.models.resnet18(num_classes=7)).eval()
    torch.save(tv.state_dict(), root / "state.pth")
    save_checkpoint(root / "checkpoint.pt", model=tv.state_dict(), epoch=1, history=[])  # as train() writes
    torch.save(tv, root / "model.pth")  # a whole pickled model
    (root / "empty.pth").write_bytes(b"")
    (root / "text.pth").write_text("resnet18 weights\n")
    (root / "truncated.pth").write_bytes((root / "state.pth").read_bytes()[:100_000])
    return root, tv


def test_a_state_dict_and_a_train_checkpoint_are_both_weights_files(weights_files):
    """``weights=`` and ``neuralsde.train.load_weights`` take the same files."""
    from neuralsde.train import load_weights

    root, tv = weights_files
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = tv(x)
    for name in ("state.pth", "checkpoint.pt"):
        for model in (
            ODEResNet("resnet18", weights=root / name),
            load_weights(ODEResNet("resnet18", num_classes=7), root / name),
        ):
            with torch.no_grad():  # the same weights: the same logits, to float round-off
                torch.testing.assert_close(model.eval()(x), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize(
    "name, message",
    [
        ("model.pth", "holds a pickled torchvision.models.resnet.ResNet object (a whole model?)"),
        ("empty.pth", "is empty"),
        ("text.pth", "is not a file written by torch.save, or is truncated or damaged"),
        ("truncated.pth", "is not a file written by torch.save, or is truncated or damaged"),
    ],
)
def test_a_file_without_a_state_dict_is_one_value_error_naming_it(weights_files, name, message):
    from neuralsde.train import load_weights

    path = weights_files[0] / name
    for load in (
        lambda: ODEResNet("resnet18", weights=path),
        lambda: load_weights(ODEResNet("resnet18", num_classes=7), path),
    ):
        with pytest.raises(ValueError) as info:
            load()
        text = str(info.value)
        assert f"weights file {path} {message}" in text and "expected a state dict" in text
        assert "weights_only" not in text and "\n" not in text  # torch's advice does not apply here


def test_weights_of_another_architecture_name_the_stages_and_the_one_they_fit(weights_files):
    path = weights_files[0] / "state.pth"
    with pytest.raises(ValueError) as info:
        ODEResNet("resnet50", weights=path)
    text = str(info.value)
    # 165 missing parameters and running statistics (BatchNorm's batch counters are not compared: older
    # releases of torch did not save them).
    assert text.startswith(f"the state dict in {path} does not fit resnet50: 165 missing keys in layer1, layer2, ")
    assert text.endswith("; it fits resnet18: pass that architecture") and "\n" not in text


def test_wrong_weights_are_refused(local_weights):
    from torchvision.models import ResNet50_Weights

    with pytest.raises(ValueError, match="must be a ResNet18_Weights"):
        ODEResNet("resnet18", weights=ResNet50_Weights.DEFAULT)
    with pytest.raises(ValueError, match=r"must name one of IMAGENET1K_V1, DEFAULT .* got 'IMAGENET1K_V9'"):
        ODEResNet("resnet18", weights="IMAGENET1K_V9")
    assert local_weights == []


def test_from_torchvision_replaces_head_and_stem_on_request(randomize_bn):
    tv = tv_model("resnet18", randomize_bn, num_classes=1000)
    ode = ODEResNet.from_torchvision(tv, num_classes=10, method="rk4")
    assert isinstance(ode.fc, nn.Linear) and ode.fc.out_features == 10 and ode.num_classes == 10
    assert torch.equal(ode.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    assert ode(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    gray = SDEResNet.from_torchvision(tv, in_channels=1, sigma=0.1)
    assert gray.in_channels == 1 and gray(torch.randn(2, 1, 32, 32)).shape == (2, 1000)
    same = ODEResNet.from_torchvision(tv, num_classes=1000, in_channels=3)
    assert torch.equal(same.fc.weight, tv.fc.weight) and torch.equal(same.conv1.weight, tv.conv1.weight)


def test_unknown_keyword_arguments_raise_type_error(randomize_bn):
    tv = tv_model("resnet18", randomize_bn)
    for bad in (dict(arch="resnet50"), dict(weights="DEFAULT"), dict(num_clases=10), dict(sigma=0.5)):
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            ODEResNet.from_torchvision(tv, **bad)
    with pytest.raises(TypeError, match="'arch'"):
        SDEResNet.small(arch="resnet18")
    with pytest.raises(TypeError):
        ODEResNet("resnet18", num_clases=10)
    assert SDEResNet.from_torchvision(tv, sigma=0.25, eval_samples=2).sigma == 0.25
