"""Sharper attributions: the share of attribution mass on the object, on shapes with ground-truth masks."""

from __future__ import annotations

from ..networks import sigma_of
from ..store import Store
from .formatting import VERDICT_MARK, ci, flags, in_run_order, markdown_table, title
from .section import Section, verdict_row
from .stats import accuracy_flags, by_seed, finite_mean, mean_ci, seed_effect

__all__ = ["LOCALISATION"]


def summarise(store: Store, results: dict) -> dict:
    cfg = store.cfg
    cells = store.results("localisation")
    if not cells:
        return {"localisation": {}}
    ode, sde = (n.name for n in cfg.shape_networks())
    per_model: dict = {}
    comparisons = {}
    for method in cfg.methods:
        a, b = by_seed(cells, sde, method), by_seed(cells, ode, method)
        for name, vals in ((ode, b), (sde, a)):
            if vals:
                per_model.setdefault(name, {})[method] = mean_ci([finite_mean(v) for v in vals.values()])
        if a and b:
            comparisons[method] = seed_effect(a, b, sign=1, relative=False)
    share = [x for c in cells.values() for x in c["object_share"]]
    return {
        "localisation": {
            "per_model": per_model,
            "comparisons": comparisons,
            "object_share": finite_mean(share),
            "accuracy_flags": accuracy_flags(results["models"], ode, sde),
        }
    }


def verdicts(results: dict) -> list[dict]:
    loc = results["localisation"]
    flagged = loc.get("accuracy_flags", [])
    note = f"unequal accuracy in seed(s) {', '.join(map(str, flagged))}" if flagged else ""
    setting = f"shapes, σ = {results['config']['table_sigma']:g}"
    return [
        verdict_row(
            "SDE attributions are sharper (localisation)",
            f"{title(method)}, {setting}",
            r["verdict"],
            r["effect"],
            "mass on object",
            r["agree"],
            r["seeds"],
            note + (" (one seed: image-level CI)" if r.get("level") == "images" else ""),
        )
        for method, r in in_run_order(loc.get("comparisons", {}), results)
    ]


def tables(results: dict) -> list[str]:
    """Localisation on the shapes, decided over seeds."""
    loc = results["localisation"]
    if not loc:
        return []
    ode, sde = sorted(loc["per_model"], key=sigma_of)
    rows = [
        [
            title(method),
            ci(loc["per_model"][ode][method], 3),
            ci(loc["per_model"][sde][method], 3),
            ci(c["effect"], 3),
            f"{c['agree']}/{c['seeds']}",
            VERDICT_MARK[c["verdict"]],
        ]
        for method, c in loc["comparisons"].items()
    ]
    return [
        "## Localisation on shapes (fraction of attribution mass on the object; higher is sharper)",
        "",
        f"The objects cover {loc['object_share']:.3f} of the image on average (a uniform attribution scores that)"
        f"{flags(loc['accuracy_flags'])}. Mean over seeds [95% CI over seeds]; the difference is formed per seed.",
        "",
        *markdown_table(["method", "ODE", "SDE", "SDE − ODE [95% CI over seeds]", "seeds higher", "verdict"], rows),
        "",
    ]


LOCALISATION = Section("localisation", summarise, page="sensitivity", verdicts=verdicts, tables=tables)
