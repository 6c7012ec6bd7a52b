"""neuralsde.stage.ContinuousStage: exact discrete limit, convergence, time, noise, errors."""

import collections

import pytest
import torch
import torchvision
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from neuralsde import ContinuousStage, NormalizedDiffusion, ODEResNet, SolverError, integrate
from neuralsde.blocks import ResBlock
from neuralsde.diffusion import AdditiveDiffusion, MultiplicativeDiffusion
from neuralsde.solvers import all_finite, extrema


def tv_layer(randomize_bn, which="layer1", arch="resnet18"):
    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.get_model(arch)).eval()
    return getattr(model, which)


def stage_of(layer, **kwargs):
    return ContinuousStage([ResBlock.from_torchvision(b) for b in layer], **kwargs).eval()


@pytest.mark.parametrize("which", ["layer1", "layer2"])
def test_one_euler_step_per_block_is_the_torchvision_stage(randomize_bn, which):
    layer = tv_layer(randomize_bn, which)
    stage = stage_of(layer)
    assert stage.continuous == ([True, True] if which == "layer1" else [False, True])
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        ref, out = layer(x), stage(x)
    # x + 1.0 * (block(x) - x) rounds to block(x) within a few float32 ulps.
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6 * ref.abs().max().item())
    assert stage.stats.steps == 1 + (which == "layer1") and stage.stats.nfe == stage.stats.steps


def test_finer_steps_converge_at_the_method_order(randomize_bn):
    stage = stage_of(tv_layer(randomize_bn)).double()
    x = torch.randn(1, 64, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        stage.set_solver(method="rk4", steps_per_block=64)
        ref = stage(x)
        errors = []
        for steps in (2, 4):
            stage.set_solver(steps_per_block=steps)
            errors.append((stage(x) - ref).abs().max().item())
    # rk4: halving the step divides the error by ~16 on smooth pieces; the ReLU kinks
    # cost some of that, but more than 4x remains (measured ~9x).
    assert errors[1] < errors[0] / 4, errors


def test_drift_over_the_whole_interval_matches_the_stage(randomize_bn):
    stage = stage_of(tv_layer(randomize_bn), T=3.0)
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        via_drift = integrate(stage.drift, x, [0.0, 1.5, 3.0], method="euler")[-1]
        # The stage steps with the block itself, the plain drift as x + (block(x) - x):
        # float32 rounding of that sum costs an ulp of |x| (~5e-7 at |x| ~ 4) per step,
        # over three steps; 1e-5 leaves room and still catches a wrong block or interval.
        torch.testing.assert_close(via_drift, stage(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"t must be in \[0, 3.0\]"):
        stage.drift(3.5, x)


def test_partial_euler_steps_of_a_block_follow_its_drift(randomize_bn):
    """Several Euler steps per block (the block's lerp step) against the plain drift."""
    stage = stage_of(tv_layer(randomize_bn), T=3.0)
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        stage.set_solver(steps_per_block=4)
        via_drift = integrate(stage.drift, x, [0.0, 1.5, 3.0], method="euler", dt=1.5 / 4)[-1]
        steps = stage(x)
        # Same tolerance and reason as above (8 steps, each a few ulps of |x|).
        torch.testing.assert_close(via_drift, steps, rtol=1e-5, atol=1e-5)
        stage.set_solver(steps_per_block=1)
        assert (steps - stage(x)).abs().max() > 1e-3  # four small steps are not one big one


def test_the_ode_does_not_depend_on_T(randomize_bn):
    layer = tv_layer(randomize_bn)
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        outs = [stage_of(layer, T=T, method="rk4", steps_per_block=3)(x) for T in (0.5, 2.0, 10.0)]
    # The drift is scaled by 1/h: only the time unit changes (float32 round-off).
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-5, atol=1e-5)


def test_each_drift_evaluation_uses_its_own_activation_modules(randomize_bn):
    stage = stage_of(tv_layer(randomize_bn), method="rk4", steps_per_block=3)
    calls = {}

    def count(module, inputs, output):
        calls[module] = calls.get(module, 0) + 1

    x = torch.randn(1, 64, 8, 8)
    stage(x)  # sizes the pools
    handles = [m.register_forward_hook(count) for m in stage.modules() if isinstance(m, nn.ReLU)]
    stage(x)
    for h in handles:
        h.remove()
    # 2 blocks x 3 steps x 4 rk4 stages x 2 activations per evaluation.
    assert len(calls) == 2 * 3 * 4 * 2 and set(calls.values()) == {1}


def test_noise_switch_and_seed(randomize_bn):
    layer = tv_layer(randomize_bn)
    ode = stage_of(layer)
    sde = stage_of(layer, diffusion=NormalizedDiffusion(0.5))
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        sde.noise = False
        torch.testing.assert_close(sde(x), ode(x), rtol=0, atol=0)
        sde.noise = True
        torch.manual_seed(3)
        a = sde(x)
        torch.manual_seed(3)
        b = sde(x)
        c = sde(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert sde.stats.nfe_diffusion == 2


def test_noise_variance_scales_with_the_block_time():
    """With a zero drift, X(T) - X(0) = sigma * B(T): variance sigma^2 * h per block."""
    conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    nn.init.zeros_(conv.weight)

    def block():
        b = ResBlock(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4), conv, nn.BatchNorm2d(4))
        return b

    x = torch.full((4000, 4, 1, 1), 5.0)  # relu(x + 0) = x: zero drift
    torch.manual_seed(0)
    for T in (1.0, 4.0):
        stage = ContinuousStage([block()], T=T, diffusion=AdditiveDiffusion(0.3)).eval()
        with torch.no_grad():
            var = (stage(x) - x).var().item()
        # 16000 draws: the sample variance has a relative std of ~1.1%; 5% is 4.5 of those.
        assert abs(var / (0.09 * T) - 1) < 0.05, (T, var)


def test_non_finite_state_raises_solver_error_naming_stage_time_method(randomize_bn):
    stage = stage_of(tv_layer(randomize_bn), name="layer1", method="midpoint")
    with torch.no_grad():
        stage[1].bn2.bias.fill_(float("nan"))
    with pytest.raises(SolverError) as info:
        stage(torch.randn(1, 64, 8, 8))
    err = info.value
    assert (err.stage, err.method, err.time) == ("layer1", "midpoint", 2.0)
    assert "stage 'layer1'" in str(err) and "t=2" in str(err)


def test_solver_settings_are_validated(randomize_bn):
    layer = tv_layer(randomize_bn)
    ode = stage_of(layer)
    with pytest.raises(ValueError, match="valid ODE methods"):
        ode.set_solver(method="milstein")
    with pytest.raises(ValueError, match="steps_per_block"):
        ode.set_solver(steps_per_block=0)
    with pytest.raises(ValueError, match="T must be a finite number > 0"):
        ode.set_solver(T=0.0)
    with pytest.raises(ValueError, match="rtol"):
        ode.set_solver(rtol=-1.0)
    assert (ode.method, ode.steps_per_block, ode.horizon) == ("euler", 1, 2.0)  # unchanged
    sde = stage_of(layer, diffusion=NormalizedDiffusion(0.1))
    with pytest.raises(ValueError, match="element-wise"):
        sde.set_solver(method="milstein")
    with pytest.raises(ValueError, match="ODE stages only"):
        sde.set_solver(adjoint=True)
    sde.set_diffusion(MultiplicativeDiffusion(0.1))
    sde.set_solver(method="milstein")
    with pytest.raises(ValueError, match="element-wise"):
        sde.set_diffusion(NormalizedDiffusion(0.1))
    with pytest.raises(ValueError, match="ResBlock"):
        ContinuousStage(list(layer))


def test_adjoint_gradients_converge_to_direct_backpropagation(randomize_bn):
    """The adjoint rebuilds the state by integrating backwards in time.

    Where a ReLU clamps, the drift is -X and the backward reconstruction amplifies its
    errors, so the adjoint gradient is only as good as that reconstruction: it must
    approach direct back-propagation as the steps shrink (measured relative gaps: 2.4%
    at 4 rk4 steps per block, 0.26% at 16).
    """
    layer = tv_layer(randomize_bn)
    x = torch.randn(1, 64, 6, 6, dtype=torch.float64)
    gaps = []
    for steps in (4, 16):
        grads = []
        for adjoint in (False, True):
            stage = stage_of(layer, method="rk4", steps_per_block=steps, adjoint=adjoint).double()
            out = stage(x).square().sum()
            grads.append(torch.autograd.grad(out, stage[0].conv1.weight)[0])
        gaps.append(((grads[1] - grads[0]).abs().max() / grads[0].abs().max()).item())
    assert gaps[1] < gaps[0] / 4 and gaps[1] < 0.01, gaps


# Every continuous block is entered through its module call, for its own interval.
HOOK_SOLVERS = [
    dict(method="euler"),
    dict(method="euler", steps_per_block=3),
    dict(method="rk4", steps_per_block=2),
    dict(method="dopri5", rtol=1e-4, atol=1e-5),
    dict(method="euler", diffusion=NormalizedDiffusion(0.5)),
    dict(method="milstein", steps_per_block=2, diffusion=MultiplicativeDiffusion(0.3)),
    dict(method="srk", diffusion=MultiplicativeDiffusion(0.3)),
]
HOOK_IDS = ["euler", "euler-x3", "rk4-x2", "dopri5", "euler_maruyama", "milstein-x2", "srk"]


@pytest.mark.parametrize("settings", HOOK_SOLVERS, ids=HOOK_IDS)
def test_hooks_on_each_block_fire_once_with_the_states_at_its_interval_ends(randomize_bn, settings):
    stage = stage_of(tv_layer(randomize_bn), T=3.0, **settings)
    stage.noise = True  # an SDE stage draws noise (along a fixed path, to compare passes)
    stage.path_seed = 7
    seen = []
    pre = [b.register_forward_pre_hook(lambda m, args: seen.append(("in", m, args[0]))) for b in stage]
    post = [b.register_forward_hook(lambda m, args, out: seen.append(("out", m, out))) for b in stage]
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        out = stage(x)
    assert [(kind, m) for kind, m, _ in seen] == [
        ("in", stage[0]),
        ("out", stage[0]),
        ("in", stage[1]),
        ("out", stage[1]),
    ]
    assert seen[0][2] is x and seen[1][2] is seen[2][2] and seen[3][2] is out  # chained, nothing in between
    for h in pre + post:
        h.remove()
    # Each block's output is the solution over its own interval [k h, (k + 1) h].
    with torch.no_grad():
        for k in range(2):
            alone = stage[k](seen[2 * k][2], interval=stage.interval(k))
            torch.testing.assert_close(alone, seen[2 * k + 1][2], rtol=0, atol=0)
        torch.testing.assert_close(stage(x), out, rtol=0, atol=0)  # the hooks changed nothing


@pytest.mark.parametrize("settings", HOOK_SOLVERS[:4], ids=HOOK_IDS[:4])
def test_what_a_forward_hook_returns_is_what_the_stage_goes_on_with(randomize_bn, settings):
    stage = stage_of(tv_layer(randomize_bn), **settings)
    x = torch.randn(2, 64, 8, 8)
    replacement = torch.randn(2, 64, 8, 8, generator=torch.Generator().manual_seed(5)).relu()
    with torch.no_grad():
        expected = stage[1](replacement, interval=stage.interval(1))
        handle = stage[0].register_forward_hook(lambda m, args, out: replacement)
        assert torch.equal(stage(x), expected)
        handle.remove()
        handle = stage[1].register_forward_pre_hook(lambda m, args: (replacement,))
        assert torch.equal(stage(x), expected)  # a pre-hook replaces the input
        handle.remove()
        handle = stage[1].register_forward_hook(lambda m, args, out: out * 0)
        assert torch.equal(stage(x), torch.zeros_like(x))  # the last block's output is the stage's
        handle.remove()


def test_backward_hooks_on_a_block_see_the_gradients_at_its_interval_ends(randomize_bn):
    stage = stage_of(tv_layer(randomize_bn), method="rk4", steps_per_block=2)
    x = torch.randn(2, 64, 8, 8)
    # Reference: the two intervals by hand, keeping the gradient at the state between.
    middle = stage[0](x, interval=stage.interval(0))
    middle.retain_grad()
    out = stage[1](middle, interval=stage.interval(1))
    out.retain_grad()
    out.square().sum().backward()
    grads = {}
    handle = stage[1].register_full_backward_hook(lambda m, gin, gout: grads.update(gin=gin[0], gout=gout[0]))
    stage.zero_grad()
    stage(x).square().sum().backward()
    handle.remove()
    # The same operations in the same order: equal up to summation order (1e-6 relative).
    torch.testing.assert_close(grads["gout"], out.grad, rtol=1e-6, atol=1e-6 * out.grad.abs().max().item())
    torch.testing.assert_close(grads["gin"], middle.grad, rtol=1e-6, atol=1e-6 * middle.grad.abs().max().item())


def test_hooks_on_a_transition_block_and_on_the_stage_fire(randomize_bn):
    stage = stage_of(tv_layer(randomize_bn, "layer2"), method="rk4")
    calls = []
    handles = [m.register_forward_hook(lambda m, a, o: calls.append(m)) for m in (stage, stage[0], stage[1])]
    stage(torch.randn(1, 64, 8, 8))
    for h in handles:
        h.remove()
    assert calls == [stage[0], stage[1], stage]


def test_finiteness_is_read_back_once_at_the_end(randomize_bn):
    stage = stage_of(tv_layer(randomize_bn), name="layer1", method="rk4")
    with torch.no_grad():
        stage[0].bn2.bias.fill_(float("nan"))
    x = torch.randn(1, 64, 8, 8)
    out = stage.flow(x, check_finite=False)  # left to the caller: no error yet
    flags = stage.finite_flags()
    assert len(flags) == 2 and all(f.dtype == torch.bool and f.dim() == 0 for f in flags)
    assert not torch.isfinite(out).all()
    with pytest.raises(SolverError) as info:
        stage.check_finite()
    # The first block whose output was not finite ends at t=1.
    assert (info.value.stage, info.value.method, info.value.time) == ("layer1", "rk4", 1.0)


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def test_the_finiteness_check_costs_one_operator_per_block_and_is_formed_once():
    model = ODEResNet.from_torchvision(torchvision.models.resnet18(num_classes=3)).eval()
    blocks = sum(len(stage.continuous_blocks) for stage in model.stages)
    with torch.no_grad(), _CountOps() as count:
        model(torch.randn(1, 3, 32, 32))
    # Per block its smallest and largest element (one aminmax); the flags once, at the end of the
    # pass (one stack, one isfinite, one all): per block these were aminmax, stack, isfinite and all.
    assert count.ops["aminmax"] == blocks == 5
    assert count.ops["stack"] == count.ops["all"] == 1


def test_finiteness_over_dtypes_compares_in_the_common_dtype():
    big = torch.tensor(1e300, dtype=torch.float64)  # finite in float64, infinite in float32
    assert bool(all_finite([torch.tensor(1.0), big, torch.tensor(2.0, dtype=torch.bfloat16)]))
    assert not bool(all_finite([torch.tensor(1.0), torch.tensor(float("nan"), dtype=torch.float16)]))
    assert bool(all_finite([])) and extrema(torch.empty(0, 3)) == (0, 0)


def test_a_finite_half_precision_state_whose_sum_overflows_is_no_error():
    # Zero residual branches: each block is relu(x), so the state stays at 1000, and its
    # sum (8 * 8 * 16 * 16 * 1000 = 1.6e7) is far past fp16's largest value (65504).
    blocks = [ResBlock(*_zero_branch(8), *_zero_branch(8)) for _ in range(2)]
    stage = ContinuousStage(blocks, method="euler", steps_per_block=2).eval()
    x = torch.full((8, 8, 16, 16), 1000.0)
    for dtype in (torch.float16, torch.bfloat16):
        with torch.no_grad():
            out = stage.to(dtype)(x.to(dtype))
        assert torch.equal(out, x.to(dtype))


def _zero_branch(channels):
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    nn.init.zeros_(conv.weight)
    return conv, nn.BatchNorm2d(channels)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("steps, T", [(3, None), (1, 0.3), (3, 0.3)])
def test_sde_stages_in_half_precision_draw_noise_on_their_grid(randomize_bn, dtype, steps, T):
    """GridBrownian keeps its grid in double precision whatever the state's dtype."""
    stage = stage_of(tv_layer(randomize_bn), diffusion=NormalizedDiffusion(0.5), steps_per_block=steps, T=T)
    stage = stage.to(dtype)
    x = torch.randn(2, 64, 8, 8).to(dtype)
    with torch.no_grad():
        stage.noise = False
        quiet = stage(x)
        stage.noise = True
        torch.manual_seed(0)
        noisy = stage(x)
    assert torch.isfinite(noisy).all() and not torch.equal(noisy, quiet)
    assert stage.stats.steps == 2 * steps


def test_a_million_steps_per_block_are_counted_without_stepping(randomize_bn, monkeypatch):
    """The dry run that sizes the activation pools takes a few steps, whatever the count."""
    import neuralsde.intervals as intervals

    stepped = []
    real = intervals.integrate

    def counting(*args, **kwargs):
        stats = kwargs["stats"]
        before = stats.steps
        out = real(*args, **kwargs)
        stepped.append(stats.steps - before)
        return out

    monkeypatch.setattr(intervals, "integrate", counting)
    stage = stage_of(tv_layer(randomize_bn), method="rk4")
    stage.set_solver(steps_per_block=10**6)
    assert stage.evaluations_per_block() == [4 * 10**6, 4 * 10**6]
    assert max(stepped) <= 10  # nine steps at most per dry run
    pool = stage[0].acts
    assert len(pool.sets) == pool.MAX_SETS  # bounded, and hook-based attributions are refused:
    for relu in pool.sets.modules():
        if isinstance(relu, nn.ReLU):
            relu.register_forward_hook(lambda *a: None)
    pool.cursor = len(pool.sets)
    with pytest.raises(RuntimeError, match="fewer steps per block"):
        pool.take()
