"""The configuration of a benchmark run, its presets and its command line."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from neuralsde.models import TORCHVISION_ARCHS

__all__ = ["Config", "parse_args", "sigma_of"]

METHODS = ("saliency", "integrated_gradients", "smoothgrad_ig", "deeplift", "deeplift_shap")
METHOD_TITLES = {
    "saliency": "Saliency",
    "integrated_gradients": "Integrated Gradients",
    "smoothgrad_ig": "IG + SmoothGrad",
    "deeplift": "DeepLIFT",
    "deeplift_shap": "DeepLIFT-SHAP",
}


def sigma_of(name: str) -> float:
    """The noise σ of the network ``name`` (``"ode"``, ``"sde-0.5"``, ``"shapes-sde-0.5"``...); 0 for an ODE."""
    return 0.0 if name.endswith("ode") else float(name.rsplit("-", 1)[1])


@dataclass
class Config:
    """Everything that decides a run's numbers (recorded with every result)."""

    data: str = "digits"  # "digits", or the path of an ImageFolder tree (evaluation images)
    arch: str = "small"  # "small" (CIFAR-style) or a torchvision ResNet name
    weights: str | None = None  # torchvision weights file for the ODE network (ImageNet)
    sde_weights: str | None = None  # a trained SDE checkpoint (ImageNet), instead of fine-tuning
    train_data: str | None = None  # ImageFolder to fine-tune ODE and SDE on (ImageNet)
    device: str = "cpu"
    seed: int = 0
    # models
    sigmas: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 0.75])
    table_sigma: float = 0.5  # the SDE in the main tables and figures
    diffusion: str = "normalized"
    method: str = "euler"
    widths: list[int] = field(default_factory=lambda: [8, 16, 32])
    blocks: int = 2
    image_size: int = 224
    # training (identical for ODE and SDE)
    epochs: int = 12
    lr: float = 1e-3
    batch_size: int = 32
    eval_images: int = 0  # test images for the accuracy (0: all)
    chunk: int = 0  # images per attribution call (0: all at once)
    ig_batch: int = 0  # Captum's internal_batch_size for IG (0: no limit)
    # sensitivity (Tables 1-3 protocol)
    n_images: int = 50
    repetitions: int = 3
    radius: float = 0.02
    n_perturb: int = 10
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    ig_steps: int = 20
    sg_samples: int = 5
    sg_ig_steps: int = 10
    sg_noise: float = 0.15  # SmoothGrad noise, as a fraction of the input range
    shap_baselines: int = 4
    # robustness of rankings (Chen et al.; Ghorbani et al.)
    robust_images: int = 30
    robust_methods: list[str] = field(default_factory=lambda: ["saliency", "integrated_gradients"])
    topk: int = 8
    attack_eps: float = 0.05
    attack_steps: int = 10
    # Theorem 1 and completeness
    theorem_images: int = 20
    completeness_images: int = 10
    # shapes with masks (localisation)
    shapes: bool = True
    shapes_n: int = 2000
    shapes_size: int = 16
    shapes_epochs: int = 8
    figure_images: int = 4

    @property
    def imagenet(self) -> bool:
        """Whether this is an ImageFolder (ImageNet-protocol) run."""
        return self.data != "digits"

    def model_names(self) -> list[str]:
        """``"ode"`` and one ``"sde-<sigma>"`` per noise magnitude."""
        return ["ode"] + [f"sde-{s:g}" for s in self.sigmas]

    @property
    def table_sde(self) -> str:
        return f"sde-{self.table_sigma:g}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short hash of the configuration (results of different ones never mix)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def validate(self) -> None:
        if self.arch != "small" and self.arch not in TORCHVISION_ARCHS:
            raise ValueError(f"unknown --arch {self.arch!r}; valid: small, {', '.join(TORCHVISION_ARCHS)}")
        if self.imagenet and self.arch == "small":
            raise ValueError("an ImageFolder run needs a torchvision --arch (e.g. resnet50)")
        if self.imagenet and not (self.train_data or self.sde_weights):
            raise ValueError(
                "an ImageFolder run needs the SDE network: --sde-weights FILE (a trained SDEResNet checkpoint) "
                "or --train-data DIR (an ImageFolder to fine-tune the ODE and SDE networks on, identically)"
            )
        if self.table_sigma not in self.sigmas:
            raise ValueError(f"--table-sigma {self.table_sigma} must be one of --sigmas {self.sigmas}")
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; valid: {', '.join(METHODS)}")
        unknown = set(self.robust_methods) - {"saliency", "integrated_gradients"}
        if unknown:
            raise ValueError(f"--robust-methods supports saliency and integrated_gradients, got {sorted(unknown)}")


PRESETS = {
    # A complete run in seconds, for the test suite.
    "quick": dict(
        sigmas=[0.5],
        widths=[4, 8],
        epochs=2,
        lr=3e-3,
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
        completeness_images=2,
        shapes_n=80,
        shapes_epochs=1,
        figure_images=2,
    ),
    # The paper's protocol at ImageNet scale: 100 images x 5 repetitions, Adam 1e-4.
    "imagenet": dict(
        sigmas=[0.5],
        epochs=1,
        lr=1e-4,
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


def parse_args(argv: list[str] | None = None, description: str = "") -> tuple[Config, argparse.Namespace]:
    """Build a Config from the command line (preset first, then explicit options)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default="results", help="output folder (default: results/)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named set of sizes")
    parser.add_argument("--restart", action="store_true", help="discard earlier results in --out")
    defaults = Config()
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
        elif isinstance(value, list):
            kind = type(value[0]) if value else str
            parser.add_argument(flag, nargs="+", type=kind, default=None)
        else:
            kind = int if isinstance(value, int) else float if isinstance(value, float) else str
            parser.add_argument(flag, type=kind, default=None)
    args = parser.parse_args(argv)
    values = {}
    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    preset = args.preset or ("imagenet" if explicit.get("data", "digits") != "digits" else None)
    if preset:
        values.update(PRESETS[preset])
    values.update(explicit)
    cfg = Config(**values)
    try:
        cfg.validate()
    except ValueError as err:
        parser.error(str(err))
    return cfg, args
