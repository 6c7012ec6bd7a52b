"""Turn a run's cells into ``results.json``, ``tables.md`` and summary plots.

    python -m benchmarks.report [--out results]

Everything here is computed from the cells on disk; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from neuralsde.metrics import mean_ci, paired_test  # noqa: E402

from .common import atomic_write_text, environment, save_png, write_json  # noqa: E402
from .config import METHOD_TITLES, Config  # noqa: E402
from .paper import PAPER_SENSITIVITY  # noqa: E402
from .pipeline import Part  # noqa: E402
from .store import Store  # noqa: E402

__all__ = ["ACCURACY_GAP", "REPORT", "build", "write"]

#: Networks whose test accuracies differ by more than this are flagged as not comparable.
ACCURACY_GAP = 0.02


def _sigma(name: str) -> float:
    return 0.0 if name.endswith("ode") else float(name.rsplit("-", 1)[1])


def _models(store: Store) -> dict:
    out = {}
    for name, cell in store.cells("train").items():
        out[name] = {
            "sigma": _sigma(name),
            "test_accuracy": cell["test_accuracy"],
            "source": cell.get("source"),
            "train_seconds": cell.get("train_seconds"),
            "epochs": len(cell.get("history", [])),
        }
    return out


def _comparable(models: dict, a: str, b: str) -> dict:
    acc_a, acc_b = models.get(a, {}).get("test_accuracy"), models.get(b, {}).get("test_accuracy")
    if acc_a is None or acc_b is None:
        return {"comparable": None, "gap": None}
    gap = acc_b - acc_a
    return {"comparable": abs(gap) <= ACCURACY_GAP, "gap": gap}


def _sensitivity(cfg: Config, store: Store, models: dict) -> dict:
    cells = store.cells("sensitivity")
    values: dict[str, dict[str, dict[int, list[float]]]] = {}
    seconds: dict[str, float] = {}
    images: dict[str, int] = {}
    for cell in cells.values():
        values.setdefault(cell["model"], {}).setdefault(cell["method"], {})[cell["rep"]] = cell["values"]
        seconds[cell["method"]] = seconds.get(cell["method"], 0.0) + cell["seconds"]
        images[cell["method"]] = images.get(cell["method"], 0) + len(cell["values"])
    per_model = {
        m: {
            meth: {
                **mean_ci([v for r in sorted(reps) for v in reps[r]]),
                "rep_means": [sum(reps[r]) / len(reps[r]) for r in sorted(reps)],
            }
            for meth, reps in by_method.items()
        }
        for m, by_method in values.items()
    }
    comparisons = {}
    for sde in [n for n in values if n.startswith("sde")]:
        comp = {"accuracy": _comparable(models, "ode", sde), "methods": {}}
        for method in cfg.methods:
            ode_reps, sde_reps = values.get("ode", {}).get(method), values[sde].get(method)
            if not ode_reps or not sde_reps:
                continue
            reps = sorted(set(ode_reps) & set(sde_reps))
            a = [v for r in reps for v in sde_reps[r]]
            b = [v for r in reps for v in ode_reps[r]]
            test = paired_test(a, b)  # SDE - ODE, paired by repetition and image
            comp["methods"][method] = {
                "ode": per_model["ode"][method],
                "sde": per_model[sde][method],
                "paired": test,
                "sde_lower": test["ci_high"] < 0,
                "sde_higher": test["ci_low"] > 0,
            }
        comparisons[sde] = comp
    paper = PAPER_SENSITIVITY.get(cfg.arch) if cfg.imagenet else None
    return {
        "per_model": per_model,
        "comparisons": comparisons,
        "paper": paper,
        # Wall time of one image's max-sensitivity (all its perturbations), per method.
        "seconds_per_image": {m: seconds[m] / max(images[m], 1) for m in seconds},
        "images_per_cell": cfg.n_images,
        "repetitions": cfg.repetitions,
    }


def _robustness(cfg: Config, store: Store) -> dict:
    out: dict = {}
    raw: dict = {}
    for cell in store.cells("robustness").values():
        entry = {}
        for setting in ("random", "attack"):
            if setting in cell:
                entry[setting] = {m: mean_ci(cell[setting][m]) for m in ("kendall", "topk")}
                raw.setdefault(cell["method"], {}).setdefault(setting, {})[cell["model"]] = cell[setting]
        out.setdefault(cell["model"], {})[cell["method"]] = {**entry, "k": cell["k"], "epsilon": cell["epsilon"]}
    comparisons = {}
    for method, settings in raw.items():
        for setting, by_model in settings.items():
            if "ode" in by_model and cfg.table_sde in by_model:
                comparisons.setdefault(method, {})[setting] = {
                    m: paired_test(by_model[cfg.table_sde][m], by_model["ode"][m]) for m in ("kendall", "topk")
                }
    return {"per_model": out, "comparisons": comparisons}


def _localisation(cfg: Config, store: Store, models: dict) -> dict:
    cells = store.cells("localisation")
    if not cells:
        return {}
    per_model: dict = {}
    raw: dict = {}
    share = None
    for cell in cells.values():
        per_model.setdefault(cell["model"], {})[cell["method"]] = mean_ci(cell["values"])
        raw.setdefault(cell["method"], {})[cell["model"]] = cell["values"]
        share = mean_ci(cell["object_share"])["mean"]
    sde = f"shapes-sde-{cfg.table_sigma:g}"
    comparisons = {m: paired_test(v[sde], v["shapes-ode"]) for m, v in raw.items() if sde in v and "shapes-ode" in v}
    return {
        "per_model": per_model,
        "comparisons": comparisons,
        "object_share": share,
        "accuracy": _comparable(models, "shapes-ode", sde),
    }


def _theorem1(cfg: Config, store: Store) -> dict:
    per_model = {}
    amps: dict = {}
    for name, cell in store.cells("theorem1").items():
        rows = []
        for st in cell["stages"]:
            measured = max(st["max"]) if st["max"] else math.nan
            rows.append(
                {
                    "stage": st["stage"],
                    "L": st["L"],
                    "C": st["C"],
                    "T": st["T"],
                    "h": st["h"],
                    "bound": st["bound"],
                    "bound_max_C": st["bound_max_C"],
                    "bound_onesided": st["bound_onesided"],
                    "measured_max": measured,
                    "measured_mean": mean_ci(st["max"])["mean"],
                    "random_max": max(st["random"]),
                    "power_max": max(st["power"]),
                    "pgd_max": max(st["pgd"]),
                    "jacobian_norm_max": max(st["jacobian_norm"]),
                    "holds": measured <= st["bound_onesided"] <= st["bound"],
                }
            )
            amps.setdefault(name, {})[st["stage"]] = st["max"]
        per_model[name] = rows
    claim = {}
    for sde in [n for n in amps if n.startswith("sde")]:
        claim[sde] = {}
        for stage, ode_vals in amps.get("ode", {}).items():
            if stage in amps[sde]:
                test = paired_test(ode_vals, amps[sde][stage])  # ODE - SDE
                claim[sde][stage] = {
                    **test,
                    "ode_mean": mean_ci(ode_vals)["mean"],
                    "sde_mean": mean_ci(amps[sde][stage])["mean"],
                    "holds": test["ci_low"] > 0,
                    "contradicted": test["ci_high"] < 0,
                }
    return {
        "per_model": per_model,
        "claim": claim,
        "all_hold": all(r["holds"] for rows in per_model.values() for r in rows),
    }


def _completeness(store: Store) -> dict:
    out: dict = {}
    for cell in store.cells("completeness").values():
        entry = {
            m: {"residual": mean_ci(v["residual"]), "relative": mean_ci(v["relative"])}
            for m, v in cell["methods"].items()
        }
        change = next(iter(cell["methods"].values()))["output_change"]
        entry["output_change"] = mean_ci([abs(c) for c in change])
        out.setdefault(cell["model"], {})[cell["solver"]] = entry
    return out


def _sweep(cfg: Config, models: dict, sens: dict, th: dict) -> list[dict]:
    rows = []
    for name in sorted((n for n in models if not n.startswith("shapes")), key=_sigma):
        by_method = sens["per_model"].get(name, {})
        row = {
            "model": name,
            "sigma": _sigma(name),
            "test_accuracy": models[name]["test_accuracy"],
            "sensitivity": {m: by_method[m]["mean"] for m in cfg.methods if m in by_method},
            "amplification": {r["stage"]: r["measured_mean"] for r in th["per_model"].get(name, [])},
        }
        rows.append(row)
    return rows


def build(store: Store) -> dict:
    """Every summary of the run, from its cells."""
    cfg = store.cfg
    models = _models(store)
    sens = _sensitivity(cfg, store, models)
    th = _theorem1(cfg, store)
    return {
        "config": cfg.to_dict(),
        "digest": cfg.digest(),
        "environment": json.loads((store.root / "config.json").read_text()).get("environment", environment()),
        "models": models,
        "sensitivity": sens,
        "robustness": _robustness(cfg, store),
        "localisation": _localisation(cfg, store, models),
        "theorem1": th,
        "completeness": _completeness(store),
        "noise_sweep": _sweep(cfg, models, sens, th),
        "figures": {k: v["path"] for k, v in store.cells("figures").items()},
    }


# ---------------------------------------------------------------------------------------
def _f(x, digits=4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and (abs(x) >= 1e4 or (x != 0 and abs(x) < 1e-3)):
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def _ci(c: dict, digits=4) -> str:
    return f"{_f(c['mean'], digits)} [{_f(c['low'], digits)}, {_f(c['high'], digits)}]"


def _p(p) -> str:
    return "–" if p is None or (isinstance(p, float) and math.isnan(p)) else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def section_header(results: dict) -> list[str]:
    """The report's title and the run's provenance."""
    cfg = results["config"]
    env = results["environment"]
    return [
        "# Benchmark results",
        "",
        f"Configuration digest `{results['digest']}`, seed {cfg['seed']}, data `{cfg['data']}`, "
        f"architecture `{cfg['arch']}`, device `{env.get('device')}` "
        f"({env.get('processor')}, {env.get('cpu_count')} CPUs, {env.get('gpu', 'no GPU')}), "
        f"torch {env['versions']['torch']}, neuralsde {env['versions']['neuralsde']}.",
        "",
    ]


def section_networks(results: dict) -> list[str]:
    """The networks and their accuracies."""
    lines = [
        "## Networks",
        "",
        "| network | σ | test accuracy | epochs | training time (s) |",
        "|---|---|---|---|---|",
    ]
    for name, m in sorted(results["models"].items(), key=lambda kv: (kv[0].startswith("shapes"), kv[1]["sigma"])):
        lines.append(
            f"| {name} | {m['sigma']:g} | {m['test_accuracy']:.4f} | {m['epochs']} | {_f(m['train_seconds'], 1)} |"
        )
    return lines


def section_sensitivity(results: dict) -> list[str]:
    """The sensitivity tables (the paper's Tables 1-3 protocol)."""
    cfg = results["config"]
    lines: list[str] = []
    sens = results["sensitivity"]
    if sens["comparisons"]:
        lines += [
            "",
            "## Sensitivity (max-sensitivity, lower is more robust)",
            "",
            f"{sens['images_per_cell']} correctly classified test images × {sens['repetitions']} repetitions, "
            f"perturbation radius {cfg['radius']} (L∞, input units), {cfg['n_perturb']} perturbations; "
            "mean [95% CI]; the difference is paired by image and repetition.",
            "",
        ]
    for sde, comp in sens["comparisons"].items():
        acc = comp["accuracy"]
        note = ""
        if acc["comparable"] is False:
            note = (
                f" — **not at comparable accuracy** (SDE − ODE accuracy = {acc['gap']:+.3f}); "
                "the comparison below mixes noise and accuracy"
            )
        lines += [
            f"### ODE vs {sde}{note}",
            "",
            "| method | ODE | SDE | SDE − ODE [95% CI] | p (paired t) | p (Wilcoxon) | SDE lower? |"
            + (" paper ODE → SDE |" if sens["paper"] else ""),
            "|---|---|---|---|---|---|---|" + ("---|" if sens["paper"] else ""),
        ]
        for method, r in comp["methods"].items():
            t = r["paired"]
            verdict = "yes" if r["sde_lower"] else ("no (higher)" if r["sde_higher"] else "no difference")
            row = (
                f"| {METHOD_TITLES.get(method, method)} | {_ci(r['ode'])} | {_ci(r['sde'])} | "
                f"{_f(t['mean_diff'])} [{_f(t['ci_low'])}, {_f(t['ci_high'])}] | {_p(t['t_p'])} | "
                f"{_p(t['wilcoxon_p'])} | {verdict} |"
            )
            if sens["paper"]:
                pv = sens["paper"].get(method)
                row += f" {pv[0]:.4f} → {pv[1]:.4f} |" if pv else " – |"
            lines.append(row)
        lines.append("")
    return lines


def section_robustness(results: dict) -> list[str]:
    """Kendall tau and top-k intersection."""
    cfg = results["config"]
    lines: list[str] = []
    rob = results["robustness"]
    if rob.get("per_model"):
        lines += ["## Rank robustness of attributions (Kendall τ and top-k intersection; higher is more robust)", ""]
        lines += ["| network | method | setting | Kendall τ | top-k ∩ |", "|---|---|---|---|---|"]
        for model, by_method in sorted(rob["per_model"].items(), key=lambda kv: _sigma(kv[0])):
            for method, r in by_method.items():
                for setting in ("random", "attack"):
                    if setting in r:
                        lines.append(
                            f"| {model} | {METHOD_TITLES.get(method, method)} | {setting} "
                            f"(ε={r['epsilon']:.3g}, k={r['k']}) | {_ci(r[setting]['kendall'], 3)} | "
                            f"{_ci(r[setting]['topk'], 3)} |"
                        )
        lines.append("")
        if rob["comparisons"]:
            lines += [
                f"Paired differences {cfg['table_sigma']:g}-SDE − ODE:",
                "",
                "| method | setting | Δ Kendall τ [95% CI] | p | Δ top-k [95% CI] | p |",
                "|---|---|---|---|---|---|",
            ]
            for method, settings in rob["comparisons"].items():
                for setting, c in settings.items():
                    k, t = c["kendall"], c["topk"]
                    lines.append(
                        f"| {METHOD_TITLES.get(method, method)} | {setting} | {_f(k['mean_diff'], 3)} "
                        f"[{_f(k['ci_low'], 3)}, {_f(k['ci_high'], 3)}] | {_p(k['wilcoxon_p'])} | "
                        f"{_f(t['mean_diff'], 3)} [{_f(t['ci_low'], 3)}, {_f(t['ci_high'], 3)}] | "
                        f"{_p(t['wilcoxon_p'])} |"
                    )
            lines.append("")
    return lines


def section_localisation(results: dict) -> list[str]:
    """Localisation on the shapes."""
    cfg = results["config"]
    lines: list[str] = []
    loc = results["localisation"]
    if loc:
        lines += [
            "## Localisation on shapes (fraction of attribution mass on the object; higher is sharper)",
            "",
            f"The objects cover {loc['object_share']:.3f} of the image on average (a uniform attribution scores that).",
        ]
        if loc["accuracy"]["comparable"] is False:
            lines.append(f"**Not at comparable accuracy** (SDE − ODE = {loc['accuracy']['gap']:+.3f}).")
        lines += ["", "| method | ODE | SDE | SDE − ODE [95% CI] | p (Wilcoxon) |", "|---|---|---|---|---|"]
        sde = f"shapes-sde-{cfg['table_sigma']:g}"
        for method, c in loc["comparisons"].items():
            lines.append(
                f"| {METHOD_TITLES.get(method, method)} | {_ci(loc['per_model']['shapes-ode'][method], 3)} | "
                f"{_ci(loc['per_model'][sde][method], 3)} | {_f(c['mean_diff'], 3)} "
                f"[{_f(c['ci_low'], 3)}, {_f(c['ci_high'], 3)}] | {_p(c['wilcoxon_p'])} |"
            )
        lines.append("")
    return lines


def section_theorem1(results: dict) -> list[str]:
    """Theorem 1: bounds, measured amplification and the ODE-vs-SDE claim."""
    lines: list[str] = []
    th = results["theorem1"]
    if th["per_model"]:
        lines += [
            "## Theorem 1: bound against measured amplification",
            "",
            "C_k = (1 + L_k)/h bounds the Lipschitz constant of block k's drift (L_k: product of the "
            "conv/BN operator norms); e^{∫C} = ∏ e^{1+L_k} is Theorem 1's bound, e^{∑L_k} its one-sided "
            "refinement, and 'measured' the largest ‖F(x+δ)−F(x)‖/‖δ‖ found (random, worst-direction "
            "and PGD search).",
            "",
            "| network | stage | L per block | max C | e^{CT} | e^{∫C} | one-sided | measured | "
            "bound / measured | holds |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for model, rows in sorted(th["per_model"].items(), key=lambda kv: _sigma(kv[0])):
            for r in rows:
                ls = ", ".join(f"{v:.2f}" for v in r["L"])
                lines.append(
                    f"| {model} | {r['stage']} | {ls} | {_f(max(r['C']), 2)} | {_f(r['bound_max_C'])} | "
                    f"{_f(r['bound'])} | {_f(r['bound_onesided'])} | {_f(r['measured_max'], 3)} | "
                    f"{_f(r['bound_onesided'] / r['measured_max'], 1)} | {'yes' if r['holds'] else 'NO'} |"
                )
        lines.append("")
        for sde, stages in th["claim"].items():
            lines += [
                f"The paper's claim ε_F/ε_x(ODE) ≥ ε_F/ε_x(SDE), ODE vs {sde}, per stage (paired over images):",
                "",
                "| stage | ODE mean | SDE mean | ODE − SDE [95% CI] | p (Wilcoxon) | verdict |",
                "|---|---|---|---|---|---|",
            ]
            for stage, c in stages.items():
                verdict = "holds" if c["holds"] else ("contradicted" if c["contradicted"] else "not resolved")
                lines.append(
                    f"| {stage} | {_f(c['ode_mean'], 3)} | {_f(c['sde_mean'], 3)} | {_f(c['mean_diff'], 3)} "
                    f"[{_f(c['ci_low'], 3)}, {_f(c['ci_high'], 3)}] | {_p(c['wilcoxon_p'])} | {verdict} |"
                )
            lines.append("")
    return lines


def section_completeness(results: dict) -> list[str]:
    """Completeness residuals per network, solver and method."""
    cfg = results["config"]
    lines: list[str] = []
    comp = results["completeness"]
    if comp:
        ig = cfg["ig_steps"]
        lines += [
            "## Completeness residual |Σ(A(x') − A(x)) − (F(x') − F(x))| (eq. 9)",
            "",
            f"x' = x + uniform noise of radius {cfg['radius']}; mean residual over images, and beside it "
            "the mean |F(x') − F(x)| it is to be compared with. IG's residual is the error of its "
            "quadrature (it shrinks with the steps); DeepLIFT's is round-off unless the network has a "
            "non-linearity without a DeepLIFT rule (the normalized noise on a fixed path).",
            "",
            f"| network | solver | IG ({ig} steps) | IG ({10 * ig} steps) | DeepLIFT | DeepLIFT-SHAP | "
            "mean |F(x') − F(x)| |",
            "|---|---|---|---|---|---|---|",
        ]
        for model, solvers in comp.items():
            for solver, methods in solvers.items():
                cells = [
                    _f(methods[m]["residual"]["mean"]) if m in methods else "–"
                    for m in ("integrated_gradients", "integrated_gradients_x10", "deeplift", "deeplift_shap")
                ]
                lines.append(
                    f"| {model} | {solver} | " + " | ".join(cells) + f" | {_f(methods['output_change']['mean'])} |"
                )
        lines.append("")
    return lines


def section_noise_sweep(results: dict) -> list[str]:
    """The noise sweep."""
    lines: list[str] = []
    sweep = results["noise_sweep"]
    if len(sweep) > 1:
        methods = list(sweep[0]["sensitivity"])
        stages = list(sweep[0]["amplification"])
        lines += [
            "## Noise sweep",
            "",
            "| σ | accuracy | "
            + " | ".join(METHOD_TITLES.get(m, m) for m in methods)
            + " | "
            + " | ".join(f"amplification {s}" for s in stages)
            + " |",
            "|---|---|" + "---|" * (len(methods) + len(stages)),
        ]
        for row in sweep:
            lines.append(
                f"| {row['sigma']:g} | {row['test_accuracy']:.4f} | "
                + " | ".join(_f(row["sensitivity"].get(m), 4) for m in methods)
                + " | "
                + " | ".join(_f(row["amplification"].get(s), 3) for s in stages)
                + " |"
            )
        lines.append("")
    return lines


def section_figures(results: dict) -> list[str]:
    """The list of figures."""
    lines: list[str] = []
    if results["figures"]:
        lines += ["## Figures", ""] + [f"- `{p}`" for p in sorted(results["figures"].values())] + [""]
    return lines


SECTIONS = (
    section_header,
    section_networks,
    section_sensitivity,
    section_robustness,
    section_localisation,
    section_theorem1,
    section_completeness,
    section_noise_sweep,
    section_figures,
)


def tables(results: dict) -> str:
    """The Markdown report: every section in turn."""
    return "\n".join(line for section in SECTIONS for line in section(results))


def plots(results: dict, store: Store) -> dict:
    """Summary plots (noise sweep, Theorem 1, sensitivity); returns name -> path."""
    made = {}
    sweep = results["noise_sweep"]
    if len(sweep) > 1:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        sig = [r["sigma"] for r in sweep]
        axes[0].plot(sig, [r["test_accuracy"] for r in sweep], "o-")
        axes[0].set(xlabel="noise σ", ylabel="test accuracy", title="accuracy")
        for m in sweep[0]["sensitivity"]:
            axes[1].plot(sig, [r["sensitivity"].get(m, math.nan) for r in sweep], "o-", label=METHOD_TITLES.get(m, m))
        axes[1].set(xlabel="noise σ", ylabel="max-sensitivity", title="attribution sensitivity")
        axes[1].legend(fontsize=7)
        for s in sweep[0]["amplification"]:
            axes[2].plot(sig, [r["amplification"].get(s, math.nan) for r in sweep], "o-", label=s)
        axes[2].set(xlabel="noise σ", ylabel="mean measured ‖ΔF‖/‖Δx‖", title="amplification per stage")
        axes[2].legend(fontsize=7)
        path = store.figure("noise_sweep.png")
        save_png(fig, path)
        made["noise_sweep"] = str(path.relative_to(store.root))
    th = results["theorem1"]["per_model"]
    if th:
        labels, bound, onesided, measured = [], [], [], []
        for model, rows in sorted(th.items(), key=lambda kv: _sigma(kv[0])):
            for r in rows:
                labels.append(f"{model}\n{r['stage']}")
                bound.append(r["bound"])
                onesided.append(r["bound_onesided"])
                measured.append(r["measured_max"])
        fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(labels)), 3.8))
        xs = range(len(labels))
        ax.bar([x - 0.27 for x in xs], bound, 0.27, label="e^{∫C} (Theorem 1)")
        ax.bar(list(xs), onesided, 0.27, label="one-sided bound")
        ax.bar([x + 0.27 for x in xs], measured, 0.27, label="measured amplification")
        ax.set_yscale("log")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=6)
        ax.set_ylabel("‖F(x+δ)−F(x)‖ / ‖δ‖")
        ax.legend(fontsize=7)
        ax.set_title("Theorem 1: bound vs measured, per network and stage")
        path = store.figure("theorem1.png")
        save_png(fig, path)
        made["theorem1"] = str(path.relative_to(store.root))
    comp = results["completeness"]
    if comp:
        names = ("integrated_gradients", "integrated_gradients_x10", "deeplift", "deeplift_shap")
        labels = {
            "integrated_gradients": f"IG ({results['config']['ig_steps']} steps)",
            "integrated_gradients_x10": f"IG ({10 * results['config']['ig_steps']} steps)",
            "deeplift": "DeepLIFT",
            "deeplift_shap": "DeepLIFT-SHAP",
        }
        rows = [
            (f"{model}\n{solver}", methods) for model, solvers in comp.items() for solver, methods in solvers.items()
        ]
        fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(rows)), 4))
        width = 0.8 / (len(names) + 1)
        for j, name in enumerate(names):
            vals = [m[name]["residual"]["mean"] if name in m else math.nan for _, m in rows]
            ax.bar([i + (j - len(names) / 2) * width for i in range(len(rows))], vals, width, label=labels[name])
        ax.bar(
            [i + (len(names) / 2) * width for i in range(len(rows))],
            [m["output_change"]["mean"] for _, m in rows],
            width,
            color="0.6",
            label="|F(x') − F(x)|",
        )
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r for r, _ in rows], fontsize=6)
        ax.set_ylabel("mean residual")
        ax.set_title("Completeness residual |Σ(A(x') − A(x)) − (F(x') − F(x))|")
        ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        path = store.figure("completeness.png")
        save_png(fig, path)
        made["completeness"] = str(path.relative_to(store.root))
    comps = results["sensitivity"]["comparisons"]
    if comps:
        sde = results["config"]["table_sigma"]
        name = f"sde-{sde:g}"
        comp = comps.get(name) or next(iter(comps.values()))
        methods = list(comp["methods"])
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for j, (key, label) in enumerate((("ode", "ODE"), ("sde", f"SDE σ={sde:g}"))):
            means = [comp["methods"][m][key]["mean"] for m in methods]
            err = [
                [means[i] - comp["methods"][m][key]["low"] for i, m in enumerate(methods)],
                [comp["methods"][m][key]["high"] - means[i] for i, m in enumerate(methods)],
            ]
            ax.bar([i + (j - 0.5) * 0.38 for i in range(len(methods))], means, 0.38, yerr=err, capsize=3, label=label)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([METHOD_TITLES.get(m, m) for m in methods], fontsize=8)
        ax.set_ylabel("max-sensitivity (95% CI)")
        ax.legend()
        path = store.figure("sensitivity.png")
        save_png(fig, path)
        made["sensitivity"] = str(path.relative_to(store.root))
    return made


def write(store: Store) -> dict:
    """Build the results and write ``results.json``, ``tables.md`` and the plots."""
    results = build(store)
    results["plots"] = plots(results, store)
    write_json(store.root / "results.json", results)
    atomic_write_text(store.root / "tables.md", tables(results))
    return results


# Last in a run: results.json, tables.md and the summary plots, from every cell on disk.
REPORT = Part("report", finish=lambda ctx: write(ctx.store))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    record = Path(args.out) / "config.json"
    if not record.exists():
        parser.error(f"{args.out} holds no run (no config.json); run python -m benchmarks first")
    cfg = Config(**json.loads(record.read_text())["config"])
    write(Store(args.out, cfg))
    print(f"wrote {args.out}/results.json and {args.out}/tables.md")


if __name__ == "__main__":
    sys.exit(main())
