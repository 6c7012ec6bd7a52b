"""Attribution maps, input | ODE | SDE for each method, as PNG (the paper's Figures 1-7).

python -m benchmarks.figures [run options]
"""

from __future__ import annotations

import sys
from functools import partial

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from neuralsde.metrics import importance  # noqa: E402

from .cells import explainer  # noqa: E402
from .config import METHOD_TITLES, Config  # noqa: E402
from .data import Data, stack  # noqa: E402
from .networks import Network  # noqa: E402
from .pipeline import Context, Part, run  # noqa: E402
from .store import Store  # noqa: E402

__all__ = ["FIGURES", "run_figures"]


def _show_input(ax, img: torch.Tensor, value_range) -> None:
    img = img.detach().cpu()
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=value_range[0], vmax=value_range[1])
    else:  # ImageNet-normalised RGB back to [0, 1]
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        ax.imshow((img * std + mean).clamp(0, 1).permute(1, 2, 0))


def _grid(x, columns, data: Data, *, width: float, input_title: str, fontsize: int):
    """A figure with one row per image: the image, then each ``(title, maps)`` column's map of it."""
    rows = len(x)
    fig, axes = plt.subplots(rows, 1 + len(columns), figsize=(width * (1 + len(columns)), width * rows), squeeze=False)
    for r in range(rows):
        _show_input(axes[r, 0], x[r], data.value_range)
        for c, (title, maps) in enumerate(columns, start=1):
            axes[r, c].imshow(maps[r].cpu(), cmap="inferno", vmin=0, vmax=float(maps[r].max()) or 1.0)
            if r == 0:
                axes[r, c].set_title(title, fontsize=fontsize)
        if r == 0:
            axes[r, 0].set_title(input_title, fontsize=fontsize)
    for ax in axes.flat:
        ax.axis("off")
    return fig


def _importance(model, method: str, cfg: Config, data: Data, x, target):
    return importance(explainer(model, method, cfg, data)(x, target)).float().view(len(x), *x.shape[-2:])


def _figure_cell(cfg: Config, store: Store, dataset: str, models, data: Data, method: str, x, target, chosen):
    columns = [(label, _importance(m, method, cfg, data, x, target)) for label, m in list(models.items())[:2]]
    fig = _grid(x, columns, data, width=2, input_title="input", fontsize=9)
    fig.suptitle(f"{METHOD_TITLES.get(method, method)} ({dataset}, training seed {cfg.seeds[0]})", fontsize=10)
    return {"path": store.save_figure(fig, f"{dataset}-{method}.png"), "images": chosen, "method": method}


def run_figures(
    ctx: Context,
    dataset: str,
    models: dict[str, nn.Module],
    prints: dict[str, str],
    data: Data,
    pool,
) -> None:
    """One PNG per method: a row per image, columns input | first model | second model."""
    cfg, store = ctx.cfg, ctx.store
    chosen = pool[: cfg.figure_images]
    x = stack(data.test, chosen).to(cfg.device)
    model_a = next(iter(models.values()))
    with torch.no_grad():
        target = model_a(x).argmax(1)
    for method in cfg.methods:
        depends = {
            "networks": prints,
            "labels": list(models),
            "options": ctx.measurement("figures", method),
            "images": chosen,
        }
        compute = partial(_figure_cell, cfg, store, dataset, models, data, method, x, target, chosen)
        _redraw_if_gone(ctx, f"{dataset}--{method}", f"{dataset}-{method}.png")
        ctx.cell("figures", f"{dataset}--{method}", compute, depends=depends, rng=f"figures/{dataset}")


def _redraw_if_gone(ctx: Context, name: str, png: str) -> None:
    """Forget the figure's cell when its image is gone, so that it is drawn again (by the rank it falls to)."""
    if ctx.owns("figures", name) and not ctx.store.figure(png).exists():
        ctx.store.path("figures", name).unlink(missing_ok=True)


#: The methods of the maps figure of natural images, where the run has them.
MAP_METHODS = ("saliency", "integrated_gradients")


def _maps_cell(cfg: Config, store: Store, dataset: str, models, data: Data, x, target, chosen) -> dict:
    """Input | each map method's ODE and SDE maps, one row per image (the figure a reader looks at first)."""
    methods = [m for m in MAP_METHODS if m in cfg.methods]
    columns = [
        (f"{METHOD_TITLES[m]}\n{label}", _importance(model, m, cfg, data, x, target))
        for m in methods
        for label, model in models.items()
    ]
    fig = _grid(x, columns, data, width=1.9, input_title="test image", fontsize=8)
    name = {"cifar10": "CIFAR-10", "imagefolder": "ImageNet"}.get(dataset, dataset)
    fig.suptitle(f"Attribution maps, {name}, {cfg.arch} (training seed {cfg.seeds[0]}; brighter: more important)",
                 fontsize=9)  # fmt: skip
    return {"path": store.save_figure(fig, f"{dataset}-maps.png"), "images": chosen, "methods": methods}


def run_maps(ctx: Context, dataset: str, models, prints, data: Data, pool) -> None:
    """One PNG of Saliency and IG maps, ODE beside SDE, for a few test images (natural images only)."""
    cfg, store = ctx.cfg, ctx.store
    chosen = pool[: cfg.figure_images]
    x = stack(data.test, chosen).to(cfg.device)
    with torch.no_grad():
        target = next(iter(models.values()))(x).argmax(1)
    methods = [m for m in MAP_METHODS if m in cfg.methods]
    depends = {
        "networks": prints,
        "labels": list(models),
        "options": {m: ctx.measurement("figures", m) for m in methods},
        "images": chosen,
    }
    _redraw_if_gone(ctx, f"{dataset}--maps", f"{dataset}-maps.png")
    compute = partial(_maps_cell, cfg, store, dataset, models, data, x, target, chosen)
    ctx.cell("figures", f"{dataset}--maps", compute, depends=depends, rng=f"figures/{dataset}")


def _maps(cfg: Config) -> bool:
    """Whether the run draws the maps figure: natural (RGB) images, with a map method."""
    return (cfg.cifar or cfg.imagenet) and any(m in cfg.methods for m in MAP_METHODS)


def _labels(cfg: Config) -> tuple[str, str]:
    return "ODE", f"SDE σ={cfg.table_sigma:g}"


def _named(cfg: Config, nets: dict, prints: dict, names) -> tuple[dict, dict]:
    labels = _labels(cfg)
    return dict(zip(labels, (nets[n] for n in names))), dict(zip(labels, (prints[n] for n in names)))


def _figures(ctx: Context) -> None:
    cfg, seed = ctx.cfg, ctx.cfg.seeds[0]
    named, prints = _named(cfg, ctx.nets[seed], ctx.prints[seed], (Network().name, cfg.table_sde.name))
    run_figures(ctx, ctx.data.name, named, prints, ctx.data, ctx.pools[seed])
    if _maps(cfg):
        run_maps(ctx, ctx.data.name, named, prints, ctx.data, ctx.pools[seed])


def _shape_figures(ctx: Context) -> None:
    cfg, seed = ctx.cfg, ctx.cfg.seeds[0]
    named, prints = _named(cfg, ctx.shape_nets[seed], ctx.shape_prints[seed], [n.name for n in cfg.shape_networks()])
    run_figures(ctx, "shapes", named, prints, ctx.shape_data, ctx.shape_pools[seed])


# One figure per method of the run's data set, and one of the shapes when the run has them
# (the networks of the first training seed: the figures illustrate, the tables decide);
# for natural images also the maps figure.
FIGURES = Part(
    "figures",
    options={"figures": ("figure_images", "amp")},
    cells=lambda ctx: len(ctx.cfg.methods) * (1 + ctx.cfg.shapes) + _maps(ctx.cfg),
    on_main=_figures,
    on_shapes=_shape_figures,
)


def main(argv: list[str] | None = None) -> None:
    run(argv, (FIGURES,), description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
