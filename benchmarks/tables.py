"""A run's results as Markdown tables (``tables.md``), one section per measurement."""

from __future__ import annotations

import math

from .config import METHOD_TITLES, sigma_of

__all__ = [
    "SECTIONS",
    "section_completeness",
    "section_figures",
    "section_header",
    "section_localisation",
    "section_networks",
    "section_noise_sweep",
    "section_robustness",
    "section_sensitivity",
    "section_theorem1",
    "tables",
]


def _f(x, digits=4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and (abs(x) >= 1e4 or (x != 0 and abs(x) < 1e-3)):
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def _ci(c: dict, digits=4) -> str:
    return f"{_f(c['mean'], digits)} [{_f(c['low'], digits)}, {_f(c['high'], digits)}]"


def _diff(c: dict, digits=4) -> str:
    """A paired difference with its 95% CI (``mean_diff``, ``ci_low``, ``ci_high``)."""
    return f"{_f(c['mean_diff'], digits)} [{_f(c['ci_low'], digits)}, {_f(c['ci_high'], digits)}]"


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
                f"{_diff(t)} | {_p(t['t_p'])} | "
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
        for model, by_method in sorted(rob["per_model"].items(), key=lambda kv: sigma_of(kv[0])):
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
                        f"| {METHOD_TITLES.get(method, method)} | {setting} | {_diff(k, 3)} | "
                        f"{_p(k['wilcoxon_p'])} | {_diff(t, 3)} | {_p(t['wilcoxon_p'])} |"
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
                f"{_ci(loc['per_model'][sde][method], 3)} | {_diff(c, 3)} | {_p(c['wilcoxon_p'])} |"
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
            r"$C_k = (1 + L_k)/h$ bounds the Lipschitz constant of block $k$'s drift ($L_k$: product of the "
            r"conv/BN operator norms); $e^{\int C} = \prod_k e^{1+L_k}$ is Theorem 1's bound, $e^{\sum_k L_k}$ "
            r"its one-sided refinement, and 'measured' the largest $\lVert F(x+\delta)-F(x)\rVert/\lVert\delta\rVert$ "
            "found (random, worst-direction and PGD search).",
            "",
            r"| network | stage | $L$ per block | max $C$ | $e^{CT}$ | $e^{\int C}$ | one-sided | measured | "
            "bound / measured | holds |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for model, rows in sorted(th["per_model"].items(), key=lambda kv: sigma_of(kv[0])):
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
                r"The paper's claim $\varepsilon_F/\varepsilon_x(\text{ODE}) \ge "
                r"\varepsilon_F/\varepsilon_x(\text{SDE})$, "
                f"ODE vs {sde}, per stage (paired over images):",
                "",
                "| stage | ODE mean | SDE mean | ODE − SDE [95% CI] | p (Wilcoxon) | verdict |",
                "|---|---|---|---|---|---|",
            ]
            for stage, c in stages.items():
                verdict = "holds" if c["holds"] else ("contradicted" if c["contradicted"] else "not resolved")
                lines.append(
                    f"| {stage} | {_f(c['ode_mean'], 3)} | {_f(c['sde_mean'], 3)} | {_diff(c, 3)} | "
                    f"{_p(c['wilcoxon_p'])} | {verdict} |"
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
            "## Completeness residual (eq. 9)",
            "",
            r"The residual is $\lvert\sum_k (A_k(x') - A_k(x)) - (F(x') - F(x))\rvert$.",
            "",
            f"$x' = x$ + uniform noise of radius {cfg['radius']}; mean residual over images, and beside it "
            r"the mean $\lvert F(x') - F(x)\rvert$ it is to be compared with. IG's residual is the error of its "
            "quadrature (it shrinks with the steps); DeepLIFT's is round-off unless the network has a "
            "non-linearity without a DeepLIFT rule (the normalized noise on a fixed path).",
            "",
            f"| network | solver | IG ({ig} steps) | IG ({10 * ig} steps) | DeepLIFT | DeepLIFT-SHAP | "
            r"mean $\lvert F(x') - F(x)\rvert$ |",
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
