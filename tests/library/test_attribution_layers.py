"""Captum's layer and neuron methods on ODE/SDE ResNets: they hook blocks and stages, on every solver."""

import pytest
import torch
import torchvision
from captum.attr import (
    LayerActivation,
    LayerConductance,
    LayerDeepLift,
    LayerGradCam,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    NeuronConductance,
    NeuronGradient,
)
from test_attribution import SOLVER_IDS, SOLVERS, complete, images, logit_gap, ready, tiny

from neuralsde import ODEResNet, SDEResNet

pytestmark = pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning")


LAYER_METHODS = {
    "LayerGradCam": lambda m, layer, x: LayerGradCam(m, layer).attribute(x, target=1),
    "LayerActivation": lambda m, layer, x: LayerActivation(m, layer).attribute(x),
    "LayerConductance": lambda m, layer, x: LayerConductance(m, layer).attribute(x, target=1, n_steps=4),
    "LayerIntegratedGradients": lambda m, layer, x: LayerIntegratedGradients(m, layer).attribute(
        x, target=1, n_steps=4
    ),
    "LayerDeepLift": lambda m, layer, x: LayerDeepLift(m, layer).attribute(x, target=1),
    "LayerGradientXActivation": lambda m, layer, x: LayerGradientXActivation(m, layer).attribute(x, target=1),
    "NeuronGradient": lambda m, layer, x: NeuronGradient(m, layer).attribute(
        x, neuron_selector=(0, slice(None), slice(None))
    ),
    "NeuronConductance": lambda m, layer, x: NeuronConductance(m, layer).attribute(
        x, neuron_selector=(0, slice(None), slice(None)), target=1, n_steps=4
    ),
}


@pytest.mark.parametrize("cls, settings", SOLVERS, ids=SOLVER_IDS)
@pytest.mark.parametrize("method", LAYER_METHODS)
def test_layer_and_neuron_methods_on_a_block_and_on_a_stage(cls, settings, method):
    x = images()
    model = ready(cls, x, **settings)
    if cls is SDEResNet:
        model.set_noise(path_seed=3)  # the noise on, along one fixed path
    for layer in (model.layer1[-1], model.layer2):
        out = LAYER_METHODS[method](model, layer, x)
        assert torch.isfinite(out).all() and out.abs().sum() > 0, layer  # not a silent zero
        assert out.shape[0] == 2


@pytest.mark.parametrize("cls, settings", [SOLVERS[1], SOLVERS[4]], ids=["ode-rk4", "sde-milstein"])
def test_layer_deeplift_on_a_block_is_complete(cls, settings):
    """Layer DeepLIFT sums to F(x) - F(baseline) (hooks and rescale rules work together)."""
    model = tiny(cls, **settings)
    x = images(3)
    baseline = torch.zeros_like(x)
    gap = logit_gap(model, x, baseline, 2)
    for layer in (model.layer1[-1], model.layer2):
        attr, delta = LayerDeepLift(model, layer).attribute(
            x, baselines=baseline, target=2, return_convergence_delta=True
        )
        assert attr.shape == ((3, 4, 8, 8) if layer is model.layer1[-1] else (3, 8, 4, 4))
        assert complete(delta, gap), (delta, gap)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_gradcam_and_activation_of_layer4_equal_torchvisions(arch, randomize_bn):
    torch.manual_seed(0)
    tv = randomize_bn(torchvision.models.get_model(arch, num_classes=10)).eval()
    ode = ODEResNet.from_torchvision(tv).eval()
    x = torch.randn(2, 3, 64, 64)
    for make, kwargs in ((LayerGradCam, {"target": 3}), (LayerActivation, {})):
        ours = make(ode, ode.layer4[-1]).attribute(x, **kwargs)
        theirs = make(tv, tv.layer4[-1]).attribute(x, **kwargs)
        # The same blocks in the same order: float32 round-off, within 1e-5 relative.
        scale = theirs.abs().max().item()
        assert scale > 0 and (ours - theirs).abs().max().item() <= 1e-5 * scale, make.__name__
