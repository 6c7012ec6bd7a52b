"""Named sets of option values (``--preset NAME``); options given on the command line win.

A preset names only the options it changes from ``Config``'s defaults.
"""

from __future__ import annotations

__all__ = ["PRESETS"]

#: What both CIFAR-10 presets fine-tune and measure alike.
_CIFAR10 = dict(  # fmt: skip
    data="cifar10",
    methods=["saliency", "integrated_gradients", "deeplift", "deeplift_shap"],
    shapes=False,
    train_images=10000,
    epochs=2,
    lr=1e-3,
    batch_size=128,
    eval_images=1000,
)

PRESETS = {
    # A complete run in seconds, for the test suite.
    "quick": dict(  # fmt: skip
        seeds=[0, 1],
        sigmas=[0.5],
        intervention_sigma=0.5,
        mc_samples=2,
        widths=[4, 8],
        epochs=2,
        n_images=4,
        repetitions=2,
        n_perturb=3,
        ig_steps=4,
        sg_samples=2,
        sg_ig_steps=3,
        shap_baselines=2,
        robust_images=4,
        attack_steps=2,
        theorem_images=3,
        bound_steps=1,  # the local bound's cost is in its steps: a quarter of the default's
        completeness_images=2,
        shapes_n=80,
        shapes_epochs=1,
        figure_images=2,
    ),
    # Sized by the variance split of the default run (report/power.py): most of a row's
    # spread is training-run variation, so seeds matter more than images; Theorem 1's and
    # the completeness measurements, decided already with few images, keep fewer per seed.
    # Its measured length is in docs/benchmarks.md.
    "full": dict(  # fmt: skip
        seeds=list(range(40)),
        n_images=48,
        theorem_images=2,
        completeness_images=2,
    ),
    # The paper's protocol in miniature on natural images: He et al.'s pretrained CIFAR-10
    # ResNet-20 (--weights) and its twins at three noise levels, fine-tuned identically on
    # 10,000 CIFAR-10 training images (--data-root), measured on correctly classified test
    # images as on the digits. Sized by cost on 2 CPU cores: a seed's networks train in
    # about 7 minutes; IG + SmoothGrad, at 1.5 times the other four methods together, is
    # left out, and so are the parts no claim of the pages needs on natural images.
    "cifar10": dict(  # fmt: skip
        **_CIFAR10,
        arch="resnet20",
        sigmas=[0.25, 0.5, 0.75],
        parts=["sensitivity", "theorem1", "mechanism", "interventions", "figures"],
        intervention_sigma=0.5,
        intervention_each_stage=False,
        intervention_methods=["saliency", "integrated_gradients", "deeplift_shap"],
        mc_samples=2,
        theorem_images=2,
    ),
    # The second architecture: the pretrained ResNet-56, about three times ResNet-20's cost
    # per image, without the interventions and at the two smallest noise levels: noise of
    # σ per unit time in each of its 9 blocks per stage adds up to three times ResNet-20's
    # variance per stage, and at σ = 0.5 its SDE twin reached 13% test accuracy after this
    # fine-tuning (mean of 5 seeds; the ODE twin 88%), which leaves nothing to compare.
    "cifar10-resnet56": dict(  # fmt: skip
        **_CIFAR10,
        arch="resnet56",
        sigmas=[0.1, 0.25],
        table_sigma=0.25,
        parts=["sensitivity", "theorem1", "figures"],
        interventions=False,
        theorem_images=1,
    ),
    # The paper's protocol at ImageNet scale: 100 images x 5 repetitions, Adam 1e-4.
    "imagenet": dict(  # fmt: skip
        interventions=False,
        seeds=[0],
        sigmas=[0.5],
        epochs=1,
        lr=1e-4,
        schedule="constant",  # the paper's fine-tuning: Adam at 1e-4
        recalibrate=False,  # a pass over ImageNet; at 1e-4 the running statistics keep up
        batch_size=64,
        n_images=100,
        repetitions=5,
        ig_steps=50,
        sg_samples=10,
        sg_ig_steps=20,
        shap_baselines=8,
        robust_images=20,
        topk=1000,
        attack_eps=8 / 255 / 0.226,
        theorem_images=8,
        completeness_images=4,
        shapes=False,
        figure_images=4,
        eval_images=2000,
        chunk=2,
        ig_batch=64,
    ),
}
