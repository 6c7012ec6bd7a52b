"""What the library takes: one rule for seeds, clear errors for bad arguments, empty batches.

Every refusal is a ValueError that names the argument, what was expected and what came
(a SolverError for a non-finite state, like every forward pass).
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from helpers import randomize_batchnorm

import neuralsde
from neuralsde import ODEResNet, SDEResNet, SolverError, attribute, integrate
from neuralsde.spectral import lanczos_top
from neuralsde.theory import local_bound, stage_inputs
from neuralsde.validate import MAX_SEED, check_seed

pytestmark = pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning")

BAD_SEEDS = [True, 1.5, 3.0, "3", float("nan"), -1, MAX_SEED + 1, torch.tensor(3.0), torch.tensor([3]), None]
SEED_MESSAGE = r"must be an integer in \[0, 2\*\*63\)"


def small_sde(**kwargs):
    torch.manual_seed(0)
    return SDEResNet.small(in_channels=1, num_classes=10, widths=(4, 8), blocks=2, **kwargs).eval()


def images(n=2):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


# -- one rule for seeds -----------------------------------------------------------------
@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3), torch.tensor(3), torch.tensor(3, dtype=torch.int16)])
def test_every_integer_type_is_the_same_seed(value):
    assert check_seed(value) == 3 and type(check_seed(value)) is int


@pytest.mark.parametrize("value", BAD_SEEDS, ids=repr)
def test_anything_else_is_refused_with_one_message(value):
    with pytest.raises(ValueError, match="seed " + SEED_MESSAGE):
        check_seed(value)


@pytest.mark.parametrize("method", ["smoothgrad", "gradient_shap", "deeplift_shap", "integrated_gradients"])
def test_attribute_takes_every_integer_seed_alike_and_refuses_the_rest_alike(method):
    model, x = small_sde(sigma=0.5), images()
    noise = "fixed" if method == "integrated_gradients" else "off"
    ref = attribute(model, x, method, target=1, seed=3, noise=noise).attribution
    for same in (np.int64(3), torch.tensor(3)):
        assert torch.equal(attribute(model, x, method, target=1, seed=same, noise=noise).attribution, ref)
    assert not torch.equal(attribute(model, x, method, target=1, seed=4, noise=noise).attribution, ref)
    for bad in (1.5, True, -1, "3"):
        with pytest.raises(ValueError, match="^seed " + SEED_MESSAGE):
            attribute(model, x, method, target=1, seed=bad, noise=noise)


def test_path_seeds_follow_the_same_rule():
    model, x = small_sde(sigma=0.5), images()
    with torch.no_grad():
        ref = model.set_noise(path_seed=5)(x)
        assert torch.equal(model.set_noise(path_seed=np.int32(5))(x), ref)
        assert torch.equal(model.set_noise(path_seed=torch.tensor(5))(x), ref)
    for bad in (1.5, True, -1, "5"):
        with pytest.raises(ValueError, match="path_seed " + SEED_MESSAGE + " or None"):
            model.set_noise(path_seed=bad)
    assert model.path_seed == 5  # a refused value changes nothing
    stage = model.layer1
    x1 = stage_inputs(model, x)[0]
    a = local_bound(stage, x1, path_seed=7, iters=3, seed=np.int64(1))
    b = local_bound(stage, x1, path_seed=torch.tensor(7), iters=3, seed=1)
    assert torch.equal(a["bound"], b["bound"])
    for key in ("path_seed", "seed"):
        with pytest.raises(ValueError, match=f"^{key} " + SEED_MESSAGE):
            local_bound(stage, x1, iters=3, **{key: 1.5})


def test_data_set_seeds_follow_the_same_rule():
    from neuralsde.data import digits, shapes

    assert torch.equal(digits("test", seed=np.int64(2)).tensors[1], digits("test", seed=2).tensors[1])
    assert torch.equal(shapes(8, seed=torch.tensor(2)).masks, shapes(8, seed=2).masks)
    for make in (lambda s: digits("test", seed=s), lambda s: shapes(8, seed=s)):
        with pytest.raises(ValueError, match="^seed " + SEED_MESSAGE):
            make(1.5)


# -- local_bound --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stage_and_input():
    torch.manual_seed(0)
    model = ODEResNet.small(in_channels=1, num_classes=10, widths=(4, 8), blocks=2).eval()
    randomize_batchnorm(model)
    return model, model.layer1, stage_inputs(model, images(3))[0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_local_bound_refuses_a_non_finite_input_like_a_forward_pass(stage_and_input, bad):
    _, stage, x = stage_and_input
    x = x.clone()
    x[1, 0, 0, 0] = bad
    with pytest.raises(SolverError, match="stage 'layer1'.*not finite"):
        local_bound(stage, x, iters=3)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(iters=0), "iters must be an integer >= 1, got 0"), (dict(iters=2.5), "iters must be"),
     (dict(tol=0.0), "tol must be a finite number > 0"), (dict(tol=float("nan")), "tol must be"),
     (dict(tol=float("inf")), "tol must be"), (dict(steps=float("nan")), "steps must be an integer >= 1"),
     (dict(steps=0), "steps must be"), (dict(path_seed=1.5), "path_seed must be")],
)  # fmt: skip
def test_local_bound_names_each_bad_argument(stage_and_input, kwargs, message):
    _, stage, x = stage_and_input
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        local_bound(stage, x, **kwargs)


def test_local_bound_says_what_to_pass_instead(stage_and_input):
    model, stage, x = stage_and_input
    with pytest.raises(ValueError, match=r"pass one of its stages, e\.g\. model\.layer1.*stage_inputs"):
        local_bound(model, x)
    with pytest.raises(ValueError, match="x must be a torch.Tensor"):
        local_bound(stage, x.numpy())
    with pytest.raises(ValueError, match=r"neuralsde\.theory\.stage_inputs\(model, images\)"):
        local_bound(stage, images())


def test_local_bound_of_an_empty_batch_is_empty(stage_and_input):
    _, stage, x = stage_and_input
    out = local_bound(stage, x[:0], steps=2)
    full = local_bound(stage, x[:1], steps=2, iters=3)
    assert set(out) == set(full)
    for key, value in out.items():
        assert value.shape == (0, *full[key].shape[1:]) and value.dtype == full[key].dtype


def test_lanczos_allocates_as_it_iterates():
    """iters=10**9 on a 64x64x64 state: up front, the basis would take 275 GB per image.

    The operator has two eigenvalues, so Lanczos ends after two steps, with a basis of a
    few vectors.
    """
    n = 64 * 64 * 64
    scale = torch.ones(1, n)
    scale[0, 7] = 5.0
    start = torch.randn(1, 64, 64, 64, generator=torch.Generator().manual_seed(0))
    value, _ = lanczos_top(lambda v: (v.reshape(1, -1) * scale).reshape(v.shape), start, iters=10**9)
    # float32 inner products over 262,144 elements: round-off ~ sqrt(n) * 6e-8 = 3e-5.
    assert value.item() == pytest.approx(5.0, rel=1e-4)
    with pytest.raises(ValueError, match="iters must be an integer >= 1, got 0"):
        lanczos_top(lambda v: v, start, iters=0)


def test_theory_comes_with_import_neuralsde():
    code = "import neuralsde; print(neuralsde.theory.local_bound.__name__, neuralsde.theory.stage_inputs.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["local_bound", "stage_inputs"]
    assert neuralsde.theory.local_bound is local_bound


# -- clear errors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, message",
    [(dict(steps_per_block=float("nan")), "steps_per_block must be an integer >= 1, got nan"),
     (dict(steps_per_block=float("inf")), "steps_per_block must be an integer >= 1, got inf"),
     (dict(T=float("inf")), "T must be a finite number > 0, got inf"),
     (dict(rtol=float("inf")), "rtol must be a finite number > 0, got inf")],
)  # fmt: skip
def test_solver_settings_that_are_not_finite_are_refused(change, message):
    model = small_sde()
    before = model.layer1.solver
    with pytest.raises(ValueError, match=message):
        model.set_solver(**change)
    assert model.layer1.solver == before


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2.5, "10", True])
def test_from_torchvision_refuses_a_class_count_that_is_not_one(bad):
    with pytest.raises(ValueError, match=f"num_classes must be an integer >= 1, got {bad!r}"):
        ODEResNet.from_torchvision(torchvision.models.resnet18(), num_classes=bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(dt="0.1"), "dt must be a finite number > 0, got '0.1'"),
     (dict(dt=[0.1]), r"dt must be a finite number > 0, got \[0.1\]"),
     (dict(drift=lambda t, y: 1.0), r"drift\(t, y\) must return a tensor of y's shape \(2, 3\), got float"),
     (dict(drift=lambda t, y: y.numpy()), r"must return a tensor of y's shape \(2, 3\), got ndarray"),
     (dict(drift="relu"), "drift must be a callable drift"),
     (dict(diffusion=0.5), "diffusion must be a callable diffusion.*got float"),
     (dict(diffusion=lambda t, y: 0.5), r"diffusion\(t, y\) must return a tensor of y's shape \(2, 3\), got float"),
     (dict(diffusion=lambda t, y: y, bm=torch.zeros(2, 3)), "bm must be a torchsde Brownian object.*got Tensor")],
)  # fmt: skip
@pytest.mark.parametrize("method", ["euler", "other"])
def test_integrate_names_arguments_of_the_wrong_type(kwargs, message, method):
    kwargs = dict(kwargs)
    drift = kwargs.pop("drift", lambda t, y: -y)
    if method == "other":
        method = "milstein" if "diffusion" in kwargs else "rk4"
    with pytest.raises(ValueError, match=message):
        integrate(drift, torch.zeros(2, 3), [0.0, 1.0], method=method, **kwargs)


@pytest.mark.parametrize(
    "method, baselines, message",
    [("integrated_gradients", torch.zeros(3, 1, 8, 8), r"shape \(1, 1, 8, 8\) or \(2, 1, 8, 8\).*got \(3, 1, 8, 8\)"),
     ("deeplift", torch.zeros(2, 1, 4, 4), r"got \(2, 1, 4, 4\)"), ("deeplift", "zeros", "got str"),
     ("deeplift_shap", torch.zeros(4, 1, 8, 4), r"shape \(N, 1, 8, 8\).*got \(4, 1, 8, 4\)")],
)  # fmt: skip
def test_attribute_refuses_baselines_that_do_not_fit(method, baselines, message):
    with pytest.raises(ValueError, match="baselines must be .*" + message):
        attribute(small_sde(), images(), method, target=1, baselines=baselines)


@pytest.mark.parametrize(
    "method",
    ["saliency", "integrated_gradients", "deeplift", "deeplift_shap", "smoothgrad", "layer_gradcam",
     "layer_integrated_gradients"],
)  # fmt: skip
def test_attribute_on_an_empty_batch_is_empty_and_shaped_like_a_batch(method):
    model, x = small_sde(), images()
    empty = attribute(model, x[:0], method, target=1)
    full = attribute(model, x, method, target=1)
    assert empty.attribution.shape == (0, *full.attribution.shape[1:])
    assert (empty.delta is None) == (full.delta is None)
    if empty.delta is not None:
        assert empty.delta.shape == (0,)


def test_training_and_benchmark_seeds_follow_the_same_rule(capsys):
    from torch.utils.data import TensorDataset

    from benchmarks.cli import parse_args
    from neuralsde.train import train

    data = TensorDataset(images(4), torch.zeros(4, dtype=torch.long))
    for bad in (1.5, -1, True):
        with pytest.raises(ValueError, match="^seed " + SEED_MESSAGE):
            train(small_sde().train(), data, epochs=1, seed=bad)
    for argv in (["--data-seed", "-1"], ["--seeds", str(MAX_SEED + 1)]):
        with pytest.raises(SystemExit):
            parse_args(argv)
        err = capsys.readouterr().err
        assert "must be integers in [0, 2**63)" in err and len(err.strip().splitlines()) == 1


def test_set_noise_builds_no_stage_diffusion_when_the_kind_is_unchanged(monkeypatch):
    """attribute() calls set_noise twice per call: it must not rebuild every stage's diffusion.

    Only a one-channel diffusion is built, to validate the kind and sigma before anything
    changes; the stages keep their modules (a learned diffusion keeps its parameters).
    """
    import neuralsde.sde_models as sde_models

    model = small_sde(sigma=0.5)
    kept = [stage.diffusion for stage in model.stages]
    channels = []
    real = sde_models.make_diffusion
    monkeypatch.setattr(sde_models, "make_diffusion", lambda *a, **k: channels.append(a[2:] or k) or real(*a, **k))
    model.set_noise(sigma=0.25, eval_samples=2)
    attribute(model, images(), "saliency", target=1)
    assert [stage.diffusion for stage in model.stages] == kept and kept[0].sigma == 0.25
    assert all(c == {"channels": 1} for c in channels), channels
    with pytest.raises(ValueError, match="sigma"):
        model.set_noise(sigma=-1.0)
    assert model.sigma == 0.25


def test_lanczos_caps_a_basis_that_would_not_fit_with_a_warning(monkeypatch):
    """A state of 64x64x64 floats is 1 MiB a step; with 10 MiB available, at most 5 steps fit in half of it."""
    import neuralsde.spectral as spectral

    monkeypatch.setattr(spectral, "available_memory", lambda device: 10 * 2**20)
    steps = []
    start = torch.randn(1, 64, 64, 64, generator=torch.Generator().manual_seed(0))
    scale = torch.linspace(1, 2, 64**3).view(1, 64, 64, 64)  # many distinct eigenvalues: no early stop

    def op(v):
        steps.append(1)
        return v * scale

    with pytest.warns(UserWarning, match=r"iters=1000 would need a basis of 1\.0 GiB .* capped at 5 steps"):
        lanczos_top(op, start, iters=1000, tol=0)
    assert len(steps) == 5
