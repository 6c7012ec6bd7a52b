"""A network of a run, as a record: what makes it distinct, and its name in the store.

A run's networks differ in their data set (the main one, or the shapes of the localisation
part), their noise σ, the stages the noise is in (every stage, or some: the interventions),
and whether the noise is on at attribution time only (an ODE network given a diffusion
after training). ``Network`` holds exactly that; its ``name`` is the key of its checkpoint,
cells and results::

    ode, sde-0.5, shapes-ode, shapes-sde-0.5,
    sde-at-layer1-0.75, sde-at-layer2+layer3-0.75, ode+noise-at-attribution-0.75

This module alone reads a name back into a record (``Network.parse``); everything else
asks the record.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

__all__ = ["ODE", "Network", "sigma_of", "stage_names"]

_SHAPES = "shapes-"
_NAME = re.compile(
    r"(?P<shapes>shapes-)?(?:"
    r"(?P<ode>ode)"
    r"|ode\+noise-at-attribution-(?P<attribution>[^-].*)"
    r"|sde-at-(?P<stages>[^-+]+(?:\+[^-+]+)*)-(?P<staged>[^-].*)"
    r"|sde-(?P<sigma>[^-a].*)"
    r")"
)


@dataclass(frozen=True)
class Network:
    """One network of a run.

    Attributes:
        sigma: the noise magnitude (0: an ODE network).
        stages: the stages the noise is in, in order; None for every stage.
        shapes: a network of the shapes data set (localisation), not of the main one.
        at_attribution: an ODE network with the noise ``sigma`` on at attribution time
            only (trained without noise: it is the ODE network's weights).
    """

    sigma: float = 0.0
    stages: tuple[str, ...] | None = None
    shapes: bool = False
    at_attribution: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)):
            raise TypeError(f"a network's sigma is a number; got {self.sigma!r}")
        if not math.isfinite(self.sigma) or self.sigma < 0:
            raise ValueError(f"a network's sigma must be finite and >= 0; got {self.sigma}")
        object.__setattr__(self, "sigma", float(self.sigma))
        if self.stages is not None:
            stages = tuple(self.stages)
            if not stages or any(not isinstance(s, str) or not s or "-" in s or "+" in s for s in stages):
                raise ValueError(f"stages must be stage names without '-' or '+', at least one; got {self.stages!r}")
            if self.sigma == 0 or self.at_attribution or self.shapes:
                raise ValueError("only an SDE network of the main data set has noise in some stages only")
            object.__setattr__(self, "stages", stages)
        if self.at_attribution and (self.sigma == 0 or self.shapes):
            raise ValueError("noise at attribution time needs sigma > 0 and the main data set")

    # -- what it is ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Its key in the store (checkpoint, cells, results)."""
        if self.at_attribution:
            return f"ode+noise-at-attribution-{self.sigma:g}"
        if self.sigma == 0:
            base = "ode"
        elif self.stages is None:
            base = f"sde-{self.sigma:g}"
        else:
            base = f"sde-at-{'+'.join(self.stages)}-{self.sigma:g}"
        return _SHAPES + base if self.shapes else base

    def __str__(self) -> str:
        return self.name

    @property
    def data(self) -> str:
        """The data set it is trained on: ``"main"`` or ``"shapes"``."""
        return "shapes" if self.shapes else "main"

    @property
    def is_ode(self) -> bool:
        """Trained without noise (an ODE network, or one given noise only at attribution time)."""
        return self.sigma == 0 or self.at_attribution

    def noise(self) -> float | dict[str, float] | None:
        """The ``sigma`` given to ``SDEResNet`` when it is built: None (an ODE), σ, or σ per noisy stage."""
        if self.sigma == 0:
            return None
        return self.sigma if self.stages is None else dict.fromkeys(self.stages, self.sigma)

    def where(self) -> str:
        """Where its noise is, in words: ``"layer2 and layer3"``, ``"every stage"``, ``"attribution time"``."""
        if self.at_attribution:
            return "attribution time"
        if self.sigma == 0:
            return "nowhere"
        return "every stage" if self.stages is None else " and ".join(self.stages)

    # -- from its name -------------------------------------------------------------------
    @classmethod
    def parse(cls, name: str) -> Network:
        """The network named ``name`` (the inverse of ``name``); ValueError if it names none."""
        match = _NAME.fullmatch(name) if isinstance(name, str) else None
        if match is None:
            raise ValueError(
                f"{name!r} is not a network's name (ode, sde-<σ>, shapes-ode, shapes-sde-<σ>, "
                "sde-at-<stage>[+<stage>...]-<σ>, ode+noise-at-attribution-<σ>)"
            )
        shapes = match["shapes"] is not None
        if match["ode"]:
            return cls(shapes=shapes)
        try:
            if match["attribution"] is not None:
                return cls(_number(match["attribution"]), shapes=shapes, at_attribution=True)
            if match["stages"] is not None:
                return cls(_number(match["staged"]), tuple(match["stages"].split("+")), shapes=shapes)
            return cls(_number(match["sigma"]), shapes=shapes)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{name!r} is not a network's name: {err}") from None


#: The name of the main data set's ODE network (the twin every SDE network is compared with).
ODE = Network().name


def _number(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(f"its σ ({text}) must be > 0")
    return value


def sigma_of(name: str) -> float:
    """The noise σ of the network named ``name``: 0 for an ODE network (a sort key for names read from results)."""
    return Network.parse(name).sigma


_STAGES: dict[tuple, tuple[str, ...]] = {}


def stage_names(arch: str, widths, blocks: int) -> list[str]:
    """The continuous stages of the network ``arch`` builds, in order, read from the built network.

    Built on the meta device (no memory, no weights: a few hundredths of a second) and
    remembered, so every caller sees the architecture's own stages (four for ResNet-18/50,
    three for the CIFAR ResNets and ``small`` with three widths).
    """
    key = (arch, tuple(widths), int(blocks))
    if key not in _STAGES:
        from neuralsde import ODEResNet
        from neuralsde.stage import ContinuousStage

        with torch.device("meta"):
            if arch == "small":
                model = ODEResNet.small(in_channels=1, num_classes=2, widths=list(widths), blocks=blocks)
            else:
                model = ODEResNet(arch, num_classes=2)
        _STAGES[key] = tuple(n for n, m in model.named_children() if isinstance(m, ContinuousStage))
    return list(_STAGES[key])
