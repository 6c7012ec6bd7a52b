"""What a part of a run sees: its cells, the run's context, and the part itself.

A part (``Part``) measures through ``Context.measure`` (or ``Context.cell``): one stored
cell per seed, network, method... each made by the rank of the job it falls to
(``benchmarks.ranks``), reused where it verifies. ``benchmarks.pipeline`` runs the parts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from torch import Tensor, nn
from tqdm import tqdm

from .config import Config
from .data import Data, stack
from .networks import Network
from .ranks import Ranks
from .store import Store

__all__ = ["Cell", "Context", "Part"]


@dataclass(frozen=True)
class Cell:
    """What one measurement computes on: a network of one training seed and its images.

    Attributes:
        seed: the training seed.
        name: the network's name (``ode``, ``sde-0.5``, ``shapes-ode``, ...).
        model: the network.
        images: indices of the test images.
        x: those images, stacked on the run's device.
        data: the data set they come from.
        method: the attribution method (None where the cell has none).
        variant: a further label of the cell (a solver), or None.
        rep: the repetition (None where the measurement has none).
    """

    seed: int
    name: str
    model: nn.Module
    images: list[int]
    x: Tensor
    data: Data
    method: str | None = None
    variant: str | None = None
    rep: int | None = None

    @property
    def key(self) -> str:
        """Its name in the store: ``s<seed>/<network>[--<method>][--<variant>][--rep<r>]``."""
        parts = [f"s{self.seed}/{self.name}", self.method, self.variant, None if self.rep is None else f"rep{self.rep}"]
        return "--".join(p for p in parts if p is not None)

    @property
    def network(self) -> Network:
        """The network measured (the record its ``name`` stands for)."""
        return Network.parse(self.name)


@dataclass
class Context:
    """What the parts of a run measure: its configuration, store, data and networks.

    ``nets[seed][name]`` is the network ``name`` trained with ``seed``; ``prints`` holds
    the fingerprints of their weights (what the measurements depend on) and ``pools[seed]``
    the test images every network of that seed classifies correctly. ``shape_*`` are the
    same for the shapes networks, when a part measures them. ``ranks`` is this process's
    place in its job; ``deferred`` holds the cells that fell to other ranks, which rank 0
    reads back at the end.
    """

    cfg: Config
    store: Store
    data: Data
    nets: dict[int, dict[str, nn.Module]]
    prints: dict[int, dict[str, str]]
    pools: dict[int, list[int]]
    bar: tqdm | None = None
    shape_data: Data | None = None
    shape_nets: dict[int, dict[str, nn.Module]] = field(default_factory=dict)
    shape_prints: dict[int, dict[str, str]] = field(default_factory=dict)
    shape_pools: dict[int, list[int]] = field(default_factory=dict)
    ranks: Ranks = field(default_factory=Ranks)
    deferred: list[tuple] = field(default_factory=list)
    kinds: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)

    def pair(self, seed: int) -> dict[str, nn.Module]:
        """The ODE network and the SDE network of the pairwise tables, for one seed."""
        nets, pair = self.nets[seed], (Network().name, self.cfg.table_sde.name)
        return {name: nets[name] for name in pair}

    def measurement(self, kind: str, method: str | None = None) -> dict:
        """The options a cell of ``kind`` (with attribution ``method``) depends on, as its part declares them."""
        if kind not in self.kinds:
            raise ValueError(f"no part of this run declares the kind of cells {kind!r}")
        options, schema = self.kinds[kind]
        return self.cfg.measurement(options, method, schema)

    def depends(self, kind: str, prints: dict[str, str], images: list[int], method: str | None = None, **more) -> dict:
        """What a cell depends on: its networks' weights, its measurement options and its images."""
        return {"networks": prints, "options": self.measurement(kind, method), "images": images, **more}

    def measure(
        self,
        kind: str,
        compute: Callable[[Cell], dict],
        *,
        images: Callable[[int, int | None], list[int]],
        methods: Sequence[str | None] = (None,),
        variants: Callable[[int, str, nn.Module], Sequence[str]] | None = None,
        repetitions: int | None = None,
        networks: Callable[[int], dict[str, nn.Module]] | None = None,
        shapes: bool = False,
        rng: Callable[[Cell], str] | None = None,
        more: Callable[[Cell], dict] | None = None,
    ) -> None:
        """One stored cell of ``kind`` per seed, (repetition,) network, method (and variant): every part's loop.

        For each training seed (and repetition) the images are chosen and stacked once;
        each cell is reused from the store if it verifies, else ``compute(cell)`` makes it.
        A cell depends on its network's weights, its kind's (and method's) measurement
        options and its images, so a change of any of them recomputes it; the progress
        bar moves one step per cell.

        Args:
            kind: the kind of measurement (one its part declares in ``Part.options``).
            compute: makes one cell's result.
            images: ``(seed, rep) -> image indices`` (``rep`` None without repetitions).
            methods: the attribution methods, or ``(None,)``.
            variants: ``(seed, name, model) -> labels`` of further cells per network and
                method (the solvers of the completeness table); their options are the kind's.
            repetitions: draws of images per seed (None: one, and no ``--rep`` in the key).
            networks: ``seed -> {name: network}`` (default: every network of the seed).
            shapes: measure the shapes networks on the shapes data instead.
            rng: ``cell -> key`` the cell's random draws are seeded from (default: its own key).
            more: ``cell -> {...}``, what else the cell depends on.
        """
        cfg = self.cfg
        data = self.shape_data if shapes else self.data
        all_nets, prints = (self.shape_nets, self.shape_prints) if shapes else (self.nets, self.prints)
        for seed in cfg.seeds:
            nets = networks(seed) if networks is not None else all_nets[seed]
            for rep in range(repetitions) if repetitions is not None else (None,):
                chosen = images(seed, rep)
                x = stack(data.test, chosen).to(cfg.device)
                for name, model in nets.items():
                    for method in methods:
                        labels = variants(seed, name, model) if variants is not None else (None,)
                        for variant in labels:
                            cell = Cell(seed, name, model, chosen, x, data, method, variant, rep)
                            extra = more(cell) if more is not None else {}
                            depends = self.depends(kind, {name: prints[seed][name]}, chosen, method, **extra)
                            self.cell(
                                kind,
                                cell.key,
                                partial(compute, cell),
                                depends=depends,
                                rng=rng(cell) if rng is not None else None,
                            )

    def owns(self, kind: str, name: str) -> bool:
        """Whether the cell ``kind/name`` falls to this process (always, in a run of one process)."""
        return self.ranks.owns(f"{kind}/{name}")

    def cell(self, kind: str, name: str, compute: Callable[[], dict], *, depends: dict, rng: str | None = None):
        """``Store.cell`` for the cells that fall to this process; rank 0 keeps the others' for the end.

        Every measurement goes through here, so that each cell is computed by exactly one
        rank of a job; the progress bar moves one step per cell this process finishes.
        """
        if self.owns(kind, name):
            self.store.cell(kind, name, compute, depends=depends, rng=rng)
            self.tick()
        elif self.ranks.lead:
            self.deferred.append((kind, name, compute, depends, rng))

    def tick(self, n: int = 1) -> None:
        self.ranks.tick("measurements", n)
        if self.bar is not None and not self.ranks.many:  # many ranks: rank 0's heartbeat counts them all
            self.bar.update(n)


def _no_cells(ctx: Context) -> int:
    return 0


@dataclass(frozen=True)
class Part:
    """One part of a benchmark run (listed in ``benchmarks.registry``).

    Attributes:
        name: its name in the registry (and in ``--parts``).
        options: per kind of cell it writes, the measurement options those cells depend
            on (an attribution method's own options are added per method); a change of
            one recomputes them. The stale-options test checks that a cell reads no other.
        schema: per kind, the version of what its cells hold (default 1), bumped when the
            measurement's code changes them, so a resumed run recomputes older cells.
        cells: the number of measurements it adds to the progress bar.
        on_main: measures ``ctx.nets`` on ``ctx.data``.
        on_shapes: measures ``ctx.shape_nets`` on ``ctx.shape_data``.
        networks: ``cfg -> [Network]``, the networks of its own it trains (checked with
            the run's networks before anything is trained).
    """

    name: str
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    schema: dict[str, int] = field(default_factory=dict)
    cells: Callable[[Context], int] = _no_cells
    on_main: Callable[[Context], None] | None = None
    on_shapes: Callable[[Context], None] | None = None
    networks: Callable[[Config], list[Network]] | None = None

    def kinds(self) -> dict[str, tuple[tuple[str, ...], int]]:
        """Per kind of cell it writes: its options and its schema."""
        return {kind: (tuple(options), self.schema.get(kind, 1)) for kind, options in self.options.items()}
