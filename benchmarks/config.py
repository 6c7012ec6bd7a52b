"""The configuration of a benchmark run (its command line is ``benchmarks.cli``, its checks ``benchmarks.checks``).

Every option has a role, which decides what a change of it invalidates:

* ``train``: the networks (data, architecture, solver, training). Changing one retrains.
* ``measure``: a measurement. Changing one recomputes the measurements that depend on it
  (each part declares the options of the kinds of cells it writes), never the networks.
* ``run``: how and where the run executes, or which networks and parts it has; such
  options change no stored result (each network's seed and σ are part of its name).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from neuralsde.models import CIFAR_ARCHS, TORCHVISION_ARCHS

from .checks import LOWER_BOUNDS, check_device, check_finite, exists, float_options, named_data_hint
from .networks import Network, stage_names
from .registry import NAMES as PART_NAMES
from .seeds import MAX_REPETITIONS

__all__ = ["ACCURACY_OPTIONS", "Config", "digest"]

#: Training options added after stores were first written. At their default (what every
#: earlier network was trained with) they are left out of a network's identity, so that
#: an earlier store keeps its networks and cells.
LATER_TRAIN_OPTIONS = {"data_root": None, "train_images": 0, "threads": 1}
#: Data sets by name (anything else given to --data is an ImageFolder).
NAMED_DATA = ("digits", "cifar10")

METHODS = ("saliency", "integrated_gradients", "smoothgrad_ig", "deeplift", "deeplift_shap")
METHOD_TITLES = {
    "saliency": "Saliency",
    "integrated_gradients": "Integrated Gradients",
    "smoothgrad_ig": "IG + SmoothGrad",
    "deeplift": "DeepLIFT",
    "deeplift_shap": "DeepLIFT-SHAP",
}
#: The options each attribution method reads (besides the network and the images).
METHOD_OPTIONS = {
    "saliency": (),
    "integrated_gradients": ("ig_steps",),
    "smoothgrad_ig": ("sg_samples", "sg_ig_steps", "sg_noise"),
    "deeplift": (),
    "deeplift_shap": ("shap_baselines",),
}
#: The measurement options a network's test accuracy depends on (the parts declare those
#: of the cells they write: ``Part.options``).
ACCURACY_OPTIONS = ("eval_images", "amp")
#: The training options of the shapes networks (localisation); the rest of ``train``
#: options describe the main data set's networks.
SHAPES_TRAIN_OPTIONS = tuple(
    "data_seed shapes_n shapes_size shapes_epochs diffusion method widths blocks lr schedule recalibrate "
    "batch_size threads".split()
)


def digest(value) -> str:
    """A short hash of a JSON-serialisable value (results of different inputs never mix)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def _opt(default, role: str, help: str):
    meta = {"role": role, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """Everything that decides a run's numbers (recorded with every result)."""

    data: str = _opt(
        "digits",
        "train",
        "'digits' (embedded), 'cifar10' (read from --data-root), or an ImageFolder of evaluation images (ImageNet val)",
    )
    data_root: str | None = _opt(
        None,
        "train",
        "where CIFAR-10 is (--data cifar10): torchvision's cifar-10-batches-py folder or the folder holding it, "
        "an image folder with train/ and test/, or a zip of one",
    )
    download: bool = _opt(
        False, "run", "let torchvision download CIFAR-10 into --data-root if it is not there (nothing is otherwise)"
    )
    arch: str = _opt(
        "small",
        "train",
        "'small' (a CIFAR-style ResNet), a CIFAR ResNet (resnet20, resnet32, resnet44, resnet56, resnet110) "
        "or a torchvision ResNet name, e.g. resnet50",
    )
    weights: str | None = _opt(
        None,
        "train",
        "the starting weights of every network (ImageNet, CIFAR-10): a state dict file with torchvision's names "
        "(torch.save(model.state_dict(), path)), a checkpoint of neuralsde.train.train, or a CIFAR ResNet "
        "checkpoint ({'state_dict': ...} with module. prefixes)",
    )
    sde_weights: str | None = _opt(
        None, "train", "the trained SDE network's weights, instead of fine-tuning (ImageNet; files as --weights)"
    )
    train_data: str | None = _opt(None, "train", "ImageFolder to fine-tune the ODE and SDE networks on (ImageNet)")
    data_seed: int = _opt(0, "train", "seed of the train/test split, the shapes data set and the SHAP baselines")
    device: str = _opt("cpu", "run", "where to compute: cpu, cuda or cuda:N")
    threads: int = _opt(
        1,
        "train",
        "torch's intra-op CPU threads. Part of the numerics: another count rounds differently and trains other "
        "networks, so it is recorded with every network. One is the fastest on a busy machine; more can be faster "
        "on idle cores (docs/benchmarks.md has the figures)",
    )
    amp: bool = _opt(False, "measure", "measure under torch.autocast (bfloat16 on CPU, float16 on CUDA)")
    seeds: list[int] = _opt(
        [0, 1, 2, 3, 4], "run", "training seeds: every network is trained once per seed (the unit of replication)"
    )
    # models
    sigmas: list[float] = _opt([0.1, 0.25, 0.5, 0.75], "run", "noise magnitudes σ: one SDE network per value")
    table_sigma: float = _opt(0.5, "run", "the σ of the SDE network in the pairwise tables and figures")
    diffusion: str = _opt("normalized", "train", "the SDE networks' diffusion (normalized is the paper's)")
    method: str = _opt("euler", "train", "solver of the networks (training and measurement)")
    widths: list[int] = _opt([8, 16, 32], "train", "channels per stage of the 'small' architecture")
    blocks: int = _opt(2, "train", "residual blocks per stage of the 'small' architecture")
    image_size: int = _opt(224, "train", "side of the ImageFolder images after resizing")
    # training (identical for ODE and SDE)
    train_images: int = _opt(
        0, "train", "training images (0: all); fewer are a seeded draw (--data-seed), e.g. to fine-tune on a subset"
    )
    epochs: int = _opt(12, "train", "training epochs (the same for every network)")
    lr: float = _opt(3e-3, "train", "Adam's learning rate (the largest, with --schedule cosine)")
    schedule: str = _opt("cosine", "train", "learning-rate schedule: constant, or cosine (decay to 0 over all steps)")
    recalibrate: bool = _opt(
        True, "train", "recompute BatchNorm's running statistics for the final weights (one pass over the training set)"
    )
    batch_size: int = _opt(64, "train", "training batch size")
    eval_images: int = _opt(0, "measure", "test images for the accuracy (0: all)")
    chunk: int = _opt(0, "measure", "images per attribution call (0: all at once); lower it when memory runs out")
    ig_batch: int = _opt(0, "run", "Captum's internal_batch_size for IG (0: no limit); lower it when memory runs out")
    # sensitivity (Tables 1-3 protocol)
    n_images: int = _opt(16, "measure", "correctly classified test images per seed and repetition")
    repetitions: int = _opt(1, "measure", "draws of images per seed")
    radius: float = _opt(0.02, "measure", "L∞ radius of the sensitivity perturbations, in input units")
    n_perturb: int = _opt(10, "measure", "perturbations per image (max-sensitivity is the maximum over them)")
    methods: list[str] = _opt(list(METHODS), "run", f"attribution methods, of: {', '.join(METHODS)}")
    parts: list[str] = _opt(
        list(PART_NAMES),
        "run",
        f"the parts of the main job to run, of: {', '.join(PART_NAMES)} (a report follows)",
    )
    ig_steps: int = _opt(20, "measure", "Integrated Gradients' steps")
    sg_samples: int = _opt(5, "measure", "SmoothGrad's noisy samples")
    sg_ig_steps: int = _opt(10, "measure", "IG steps inside SmoothGrad")
    sg_noise: float = _opt(0.15, "measure", "SmoothGrad's noise, as a fraction of the input range")
    shap_baselines: int = _opt(4, "measure", "DeepLIFT-SHAP baselines (at least 2)")
    # robustness of rankings (Chen et al.; Ghorbani et al.)
    robust_images: int = _opt(12, "measure", "images per seed for Kendall's τ and top-k intersection")
    robust_methods: list[str] = _opt(
        ["saliency", "integrated_gradients"], "run", "methods for the ranking robustness (saliency, IG)"
    )
    topk: int = _opt(8, "measure", "k of the top-k intersection and attack")
    attack_eps: float = _opt(0.05, "measure", "L∞ budget of the random perturbation and the top-k attack")
    attack_steps: int = _opt(10, "measure", "steps of the top-k attack")
    # Theorem 1 and completeness
    theorem_images: int = _opt(8, "measure", "images per seed for Theorem 1's amplification and local bounds")
    bound_steps: int = _opt(4, "measure", "RK4 steps per block for the local bound of the continuous flow")
    completeness_images: int = _opt(4, "measure", "images per seed for the completeness residuals")
    # shapes with masks (localisation)
    shapes: bool = _opt(True, "run", "measure localisation on generated shapes with masks")
    shapes_n: int = _opt(4000, "train", "size of the shapes data set")
    shapes_size: int = _opt(16, "train", "side of the shapes images")
    shapes_epochs: int = _opt(16, "train", "training epochs of the shapes networks")
    figure_images: int = _opt(4, "measure", "images per attribution figure (first seed only)")
    # interventions: noise in one stage only, noise at attribution time only
    interventions: bool = _opt(True, "run", "measure the interventions (noise per stage; at attribution time)")
    intervention_each_stage: bool = _opt(
        True,
        "run",
        "an intervention network with noise in each stage alone (off: the first stage alone, and every stage but the "
        "first)",
    )
    intervention_sigma: float = _opt(0.75, "run", "the σ of the interventions (one of --sigmas)")
    intervention_methods: list[str] = _opt(
        ["saliency", "integrated_gradients", "deeplift_shap"], "run", "attribution methods of the interventions"
    )
    mc_samples: int = _opt(4, "measure", "Brownian paths averaged by an attribution with noise at attribution time")

    @property
    def imagenet(self) -> bool:
        """Whether this is an ImageFolder (ImageNet-protocol) run."""
        return self.data not in NAMED_DATA

    @property
    def cifar(self) -> bool:
        """Whether this is a CIFAR-10 run."""
        return self.data == "cifar10"

    def stage_names(self) -> list[str]:
        """The continuous stages of the run's architecture, read from the built network: ``layer1`` ..."""
        return stage_names(self.arch, self.widths, self.blocks)

    def table_networks(self) -> list[Network]:
        """The networks of the tables: the ODE network and one SDE network per noise magnitude."""
        return [Network()] + [Network(s) for s in self.sigmas]

    def shape_networks(self) -> list[Network]:
        """The two shapes networks (localisation)."""
        return [Network(shapes=True), Network(self.table_sigma, shapes=True)]

    def intervention_networks(self) -> list[Network]:
        """The networks the interventions train: noise in each stage (or the first) alone, and in all but the first."""
        stages = self.stage_names() if self.interventions else []
        alone = stages if self.intervention_each_stage else stages[:1]
        nets = [Network(self.intervention_sigma, (s,)) for s in alone] + [self.deep_network] * bool(stages)
        return list(dict.fromkeys(nets))  # with two stages, "all but the first" is the second alone

    @property
    def attribution_time_network(self) -> Network:
        """The ODE network with the noise of ``intervention_sigma`` on at attribution time only."""
        return Network(self.intervention_sigma, at_attribution=True)

    @property
    def intervention_sde(self) -> Network:
        """The SDE network whose noise the attribution-time network is given (noise in every stage)."""
        return Network(self.intervention_sigma)

    @property
    def deep_network(self) -> Network:
        """The intervention network with noise in every stage but the first."""
        stages = self.stage_names()
        return Network(self.intervention_sigma, tuple(stages[1:] or stages))

    @property
    def table_sde(self) -> Network:
        """The SDE network of the single-σ tables (robustness, localisation, figures)."""
        return Network(self.table_sigma)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def options(self, names) -> dict:
        """The values of the named options."""
        return {n: getattr(self, n) for n in names}

    def network(self, network: Network, seed: int) -> dict:
        """What ``network`` trained with ``seed`` depends on (its checkpoint's identity)."""
        if network.shapes:
            names = SHAPES_TRAIN_OPTIONS
        else:
            names = [f.name for f in dataclasses.fields(self) if f.metadata["role"] == "train"]
        names = [n for n in names if not (n in LATER_TRAIN_OPTIONS and getattr(self, n) == LATER_TRAIN_OPTIONS[n])]
        return {"network": network.name, "seed": seed, "sigma": network.sigma, **self.options(names)}

    def measurement(self, options: tuple[str, ...], method: str | None = None, schema: int = 1) -> dict:
        """The values of a kind's measurement ``options`` and attribution ``method``'s, what its cells depend on.

        ``schema`` above 1 (the version of what the kind's cells hold) is recorded too.
        """
        values = self.options(tuple(options) + (METHOD_OPTIONS[method] if method else ()))
        if schema > 1:
            values["schema"] = schema
        return values

    def digest(self) -> str:
        """A short hash of the whole configuration but its thread count.

        Runs of one configuration on other thread counts share the digest, so that they can be
        compared (``python -m benchmarks.compare``); the count is in the configuration itself.
        """
        return digest({k: v for k, v in self.to_dict().items() if k != "threads"})

    def validate(self) -> None:
        """Check every option; raises ValueError naming the option, what it must be and what it is.

        Paths come first: a path that does not exist is named as missing before anything
        that depends on what it is (``--data digts`` is a typo, not an ImageFolder).
        """
        for opt in ("data", "weights", "sde_weights", "train_data", "data_root"):
            value = getattr(self, opt)
            if (opt == "data" and value in NAMED_DATA) or (opt == "data_root" and self.download):
                continue
            if value is not None and not exists(value):
                hint = named_data_hint(opt, value, NAMED_DATA)
                raise ValueError(f"--{opt.replace('_', '-')} {value}: no such file or folder{hint}")
        floats = {f"--{name.replace('_', '-')}": getattr(self, name) for name in float_options(Config)}
        check_finite(floats)
        archs = ("small", *CIFAR_ARCHS, *TORCHVISION_ARCHS)
        if self.arch not in archs:
            raise ValueError(f"unknown --arch {self.arch!r}; valid: {', '.join(archs)}")
        if self.imagenet and self.arch not in TORCHVISION_ARCHS:
            raise ValueError("an ImageFolder run needs a torchvision --arch (e.g. resnet50)")
        if self.cifar and not self.data_root:
            raise ValueError(
                "--data cifar10 needs --data-root: torchvision's cifar-10-batches-py folder (or the folder to download "
                "it into, with --download), an image folder with train/ and test/, or a zip of one"
            )
        if self.data_root and not self.cifar:
            raise ValueError(f"--data-root is where CIFAR-10 is; it needs --data cifar10, got --data {self.data}")
        unknown = set(self.parts) - set(PART_NAMES)
        if unknown or not self.parts:
            raise ValueError(f"--parts must name some of {', '.join(PART_NAMES)}; got {self.parts}")
        if self.imagenet and not (self.train_data or self.sde_weights):
            raise ValueError(
                "an ImageFolder run needs the SDE network: --sde-weights FILE (a trained SDEResNet checkpoint) "
                "or --train-data DIR (an ImageFolder to fine-tune the ODE and SDE networks on, identically)"
            )
        if (self.weights or self.sde_weights) and self.arch == "small":
            raise ValueError("--weights and --sde-weights are for a named --arch (a CIFAR or torchvision ResNet)")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"--seeds must be distinct non-negative integers, got {self.seeds}")
        from neuralsde.validate import MAX_SEED

        for opt, values in (("seeds", self.seeds), ("data_seed", [self.data_seed])):
            if any(not 0 <= v <= MAX_SEED for v in values):  # the library's seed rule
                raise ValueError(f"--{opt.replace('_', '-')} must be integers in [0, 2**63), got {getattr(self, opt)}")
        if not self.sigmas or min(self.sigmas) <= 0 or len(set(self.sigmas)) != len(self.sigmas):
            raise ValueError(f"--sigmas must be distinct positive numbers, got {self.sigmas}")
        if self.table_sigma not in self.sigmas:
            raise ValueError(f"--table-sigma {self.table_sigma:g} must be one of --sigmas {self.sigmas}")
        from neuralsde.diffusion import DIFFUSIONS
        from neuralsde.solvers import ODE_METHODS, SDE_METHODS

        if self.diffusion not in DIFFUSIONS:
            raise ValueError(f"unknown --diffusion {self.diffusion!r}; valid: {', '.join(DIFFUSIONS)}")
        shared = [m for m in SDE_METHODS if m in ODE_METHODS]  # ODE and SDE networks are trained alike
        from neuralsde.train import SCHEDULES

        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown --schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.method not in shared:
            raise ValueError(
                f"--method must be a solver of both ODE and SDE networks ({', '.join(shared)}), got {self.method!r}"
            )
        unknown = set(self.methods) - set(METHODS)
        if unknown or not self.methods:
            raise ValueError(f"--methods must name some of {', '.join(METHODS)}; got {self.methods}")
        if self.interventions and (
            set(self.intervention_methods) - set(self.methods) or self.intervention_sigma not in self.sigmas
        ):
            raise ValueError("--intervention-methods must be among --methods and --intervention-sigma among --sigmas")
        unknown = set(self.robust_methods) - {"saliency", "integrated_gradients"}
        if unknown:
            raise ValueError(f"--robust-methods supports saliency and integrated_gradients, got {sorted(unknown)}")
        if self.repetitions > MAX_REPETITIONS:  # repetition r draws its images with the seed offset r
            raise ValueError(f"--repetitions must be at most {MAX_REPETITIONS}, got {self.repetitions}")
        for opt, low in LOWER_BOUNDS.items():
            value = getattr(self, opt)
            bad = any(v < low for v in value) if isinstance(value, list) else value < low
            if bad:
                raise ValueError(f"--{opt.replace('_', '-')} must be at least {low:g}, got {value}")
        for opt in ("radius", "attack_eps", "lr", "sg_noise"):
            if getattr(self, opt) <= 0:
                raise ValueError(f"--{opt.replace('_', '-')} must be positive, got {getattr(self, opt)}")
        check_device(self.device)
