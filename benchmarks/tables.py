"""A run's results as Markdown tables (``tables.md``): the verdicts first, then one section per measurement."""

from __future__ import annotations

from .common import number as _f
from .common import percent as _pct
from .config import METHOD_TITLES, sigma_of
from .explain_report import section_explains

__all__ = [
    "SECTIONS",
    "console_summary",
    "section_completeness",
    "section_figures",
    "section_header",
    "section_localisation",
    "section_networks",
    "section_noise_sweep",
    "section_robustness",
    "section_sensitivity",
    "section_theorem1",
    "section_verdicts",
    "tables",
]

VERDICT_MARK = {"holds": "**holds**", "fails": "**fails**", "depends": "depends"}


def _ci(c: dict, digits=4) -> str:
    return f"{_f(c['mean'], digits)} [{_f(c['low'], digits)}, {_f(c['high'], digits)}]"


def _diff(c: dict, digits=4) -> str:
    """A paired difference with its 95% CI (``mean_diff``, ``ci_low``, ``ci_high``)."""
    return f"{_f(c['mean_diff'], digits)} [{_f(c['ci_low'], digits)}, {_f(c['ci_high'], digits)}]"


def _effect(c: dict, unit: str) -> str:
    """An effect with its interval, in its unit."""
    if unit == "relative":
        return f"{_pct(c['mean'])} [{_pct(c['low'])}, {_pct(c['high'])}]"
    if unit == "bound ÷ measured (range)":
        return f"{_f(c['low'], 1)} to {_f(c['high'], 1)}"
    if unit.endswith("(median, range)"):
        return f"{_f(c['mean'], 3)} ({_f(c['low'], 3)} to {_f(c['high'], 3)})"
    if unit in ("accuracy", "mass on object"):
        return f"{100 * c['mean']:+.2f} pt [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]"
    return f"{_f(c['mean'], 3)} [{_f(c['low'], 3)}, {_f(c['high'], 3)}]"


def _seeds(results: dict) -> str:
    seeds = results["seeds"]
    return f"{len(seeds)} training seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})"


def section_header(results: dict) -> list[str]:
    """The report's title and the run's provenance."""
    cfg = results["config"]
    env = results["environment"]
    return [
        "# Benchmark results",
        "",
        f"{_seeds(results)}; configuration digest `{results['digest']}`, data `{cfg['data']}`, "
        f"architecture `{cfg['arch']}`, device `{env.get('device')}` "
        f"({env.get('processor')}, {env.get('cpu_count')} CPUs, {env.get('gpu', 'no GPU')}), "
        f"torch {env['versions']['torch']}, neuralsde {env['versions']['neuralsde']}.",
        "",
    ]


VERDICT_RULE = (
    "Every network is trained once per training seed; a seed's ODE and SDE networks share initial weights, data "
    "order and test images. Each row's effect is formed within each seed (for sensitivity and amplification: "
    "the SDE network's mean over the ODE network's, minus 1) and the 95% interval is Student's t over the seeds' "
    "effects. A claim **holds** where that interval lies entirely on the claimed side of zero, **fails** where it "
    "lies entirely on the other side, and *depends* otherwise (the seeds disagree, or the effect is too small to "
    "tell). 'seeds' counts the seeds whose own effect points the claimed way. Theorem 1's bound holds if no "
    "measured amplification exceeds it; completeness holds where the mean residual is at most "
    "{tol:g} × the mean output change, in every (seed, solver) run measured."
)


def section_verdicts(results: dict) -> list[str]:
    """The verdict table: one row per claim of the paper and setting."""
    rows = results.get("verdicts") or []
    if not rows:
        return []
    lines = [
        "## Verdicts",
        "",
        VERDICT_RULE.format(tol=results["completeness_tolerance"]),
        "",
        "| claim | setting | verdict | effect [95% CI] | seeds | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        seeds = f"{r['agree']}/{r['seeds']}" if r["seeds"] is not None else "–"
        unit = "" if r["unit"] in ("relative", "accuracy", "mass on object") else f" ({r['unit']})"
        lines.append(
            f"| {r['claim']} | {r['setting']} | {VERDICT_MARK[r['verdict']]} | {_effect(r['effect'], r['unit'])}{unit} "
            f"| {seeds} | {r['note']} |"
        )
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("holds", "fails", "depends")}
    lines += ["", f"{counts['holds']} hold, {counts['fails']} fail, {counts['depends']} depend.", ""]
    return lines


def console_summary(results: dict) -> str:
    """The verdicts as plain text, for the end of a run."""
    rows = results.get("verdicts") or []
    if not rows:
        return ""
    width = max(len(f"{r['claim']}: {r['setting']}") for r in rows)
    lines = [f"verdicts over {_seeds(results)} (95% CI over seeds):"]
    for r in rows:
        what = f"{r['claim']}: {r['setting']}"
        unit = "runs" if r["claim"].startswith("completeness") else "seeds"
        seeds = f"  {r['agree']}/{r['seeds']} {unit}" if r["seeds"] is not None else ""
        lines.append(f"  {what:<{width}}  {r['verdict']:<7}  {_effect(r['effect'], r['unit'])}{seeds}")
    return "\n".join(lines)


def section_networks(results: dict) -> list[str]:
    """The networks and their accuracy per seed."""
    seeds = [str(s) for s in results["seeds"]]
    lines = [
        "## Networks",
        "",
        f"Test accuracy per training seed; pairs whose accuracies differ by more than "
        f"{results['accuracy_gap']:g} are flagged in the tables (the paper compares networks at equal accuracy).",
        "",
        "| network | σ | " + " | ".join(f"seed {s}" for s in seeds) + " | mean [95% CI] | epochs |",
        "|---|---|" + "---|" * len(seeds) + "---|---|",
    ]
    for name, m in sorted(results["models"].items(), key=lambda kv: (kv[0].startswith("shapes"), kv[1]["sigma"])):
        accs = " | ".join(_f(m["accuracy"].get(s), 4) for s in seeds)
        lines.append(f"| {name} | {m['sigma']:g} | {accs} | {_ci(m['test_accuracy'])} | {m['epochs'] or '–'} |")
    lines.append("")
    return lines


def _flags(flags: list[int]) -> str:
    return f" — **unequal accuracy in seed(s) {', '.join(map(str, flags))}**" if flags else ""


def section_sensitivity(results: dict) -> list[str]:
    """The sensitivity tables (the paper's Tables 1-3 protocol), decided over seeds."""
    cfg = results["config"]
    sens = results["sensitivity"]
    if not sens["comparisons"]:
        return []
    lines = [
        "## Sensitivity (max-sensitivity, lower is more robust)",
        "",
        f"{sens['images_per_cell']} correctly classified test images × {sens['repetitions']} repetition(s) per "
        f"seed, {_seeds(results)}; perturbation radius {cfg['radius']} (L∞, input units), {cfg['n_perturb']} "
        "perturbations. ODE and SDE: the mean over seeds of each seed's mean [95% CI over seeds]. 'SDE vs ODE': "
        "the per-seed relative change, its 95% CI over seeds and its seed-to-seed standard deviation. "
        "'Images': the SDE − ODE difference with the CI over all images pooled, which ignores training-run "
        "variation and is shown for comparison only.",
        "",
    ]
    for sde, comp in sens["comparisons"].items():
        lines += [
            f"### ODE vs {sde}{_flags(comp['accuracy_flags'])}",
            "",
            "| method | ODE | SDE | SDE vs ODE [95% CI over seeds] | seed sd | seeds lower "
            "| images: SDE − ODE [95% CI] | verdict |" + (" paper ODE → SDE |" if sens["paper"] else ""),
            "|---|---|---|---|---|---|---|---|" + ("---|" if sens["paper"] else ""),
        ]
        for method, r in comp["methods"].items():
            row = (
                f"| {METHOD_TITLES.get(method, method)} | {_ci(r['ode'])} | {_ci(r['sde'])} | "
                f"{_effect(r['effect'], 'relative')} | {_pct(r['effect']['sd'])} | {r['agree']}/{r['seeds']} | "
                f"{_diff(r['image'])} | {VERDICT_MARK[r['verdict']]} |"
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
    rob = results["robustness"]
    if not rob.get("per_model"):
        return []
    lines = [
        "## Rank robustness of attributions (Kendall τ and top-k intersection; higher is more robust)",
        "",
        f"ε = {_f(rob['epsilon'], 3)}, k = {rob['k']}; mean over seeds [95% CI over seeds].",
        "",
        "| network | method | setting | Kendall τ | top-k ∩ |",
        "|---|---|---|---|---|",
    ]
    for model, by_method in sorted(rob["per_model"].items(), key=lambda kv: sigma_of(kv[0])):
        for method, settings in by_method.items():
            for setting, r in settings.items():
                lines.append(
                    f"| {model} | {METHOD_TITLES.get(method, method)} | {setting} | {_ci(r['kendall'], 3)} | "
                    f"{_ci(r['topk'], 3)} |"
                )
    lines.append("")
    if rob["comparisons"]:
        lines += [
            f"{cfg['table_sigma']:g}-SDE − ODE, per seed, with the 95% CI over seeds (higher: the SDE is more robust):",
            "",
            "| method | setting | Δ Kendall τ | verdict | Δ top-k ∩ | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for method, settings in rob["comparisons"].items():
            for setting, c in settings.items():
                k, t = c["kendall"], c["topk"]
                lines.append(
                    f"| {METHOD_TITLES.get(method, method)} | {setting} | {_ci(k['effect'], 3)} | "
                    f"{VERDICT_MARK[k['verdict']]} | {_ci(t['effect'], 3)} | {VERDICT_MARK[t['verdict']]} |"
                )
        lines.append("")
    return lines


def section_localisation(results: dict) -> list[str]:
    """Localisation on the shapes, decided over seeds."""
    loc = results["localisation"]
    if not loc:
        return []
    ode, sde = sorted(loc["per_model"], key=sigma_of)
    lines = [
        "## Localisation on shapes (fraction of attribution mass on the object; higher is sharper)",
        "",
        f"The objects cover {loc['object_share']:.3f} of the image on average (a uniform attribution scores that)"
        f"{_flags(loc['accuracy_flags'])}. Mean over seeds [95% CI over seeds]; the difference is formed per seed.",
        "",
        "| method | ODE | SDE | SDE − ODE [95% CI over seeds] | seeds higher | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for method, c in loc["comparisons"].items():
        lines.append(
            f"| {METHOD_TITLES.get(method, method)} | {_ci(loc['per_model'][ode][method], 3)} | "
            f"{_ci(loc['per_model'][sde][method], 3)} | {_ci(c['effect'], 3)} | {c['agree']}/{c['seeds']} | "
            f"{VERDICT_MARK[c['verdict']]} |"
        )
    lines.append("")
    return lines


def section_theorem1(results: dict) -> list[str]:
    """Theorem 1: bounds, measured amplification and the ODE-vs-SDE claim."""
    th = results["theorem1"]
    if not th["per_model"]:
        return []
    lines = [
        "## Theorem 1: bound against measured amplification",
        "",
        r"$C_k = (1 + L_k)/h$ bounds the Lipschitz constant of block $k$'s drift ($L_k$: product of the "
        r"conv/BN operator norms); $e^{\int C} = \prod_k e^{1+L_k}$ is Theorem 1's bound, $e^{\sum_k L_k}$ "
        r"its one-sided refinement, and 'measured' the largest $\lVert F(x+\delta)-F(x)\rVert/\lVert\delta\rVert$ "
        "found (random, worst-direction and PGD search). Each entry is the median over seeds (smallest to largest "
        "seed); 'holds' if no seed's measured value exceeds its bounds.",
        "",
        r"| network | stage | $e^{\int C}$ | one-sided | measured (max over images) | bound / measured | holds |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, rows in th["per_model"].items():
        for r in rows:
            lines.append(
                f"| {model} | {r['stage']} | {_span(r, 'bound')} | {_span(r, 'bound_onesided')} | "
                f"{_span(r, 'measured_max')} | {_f(min(r['bound_over_measured']), 1)} to "
                f"{_f(max(r['bound_over_measured']), 1)} | {'yes' if r['holds'] else 'NO'} |"
            )
    lines.append("")
    for sde, claim in th["claim"].items():
        lines += [
            r"The paper's claim $\varepsilon_F/\varepsilon_x(\text{SDE}) \le "
            r"\varepsilon_F/\varepsilon_x(\text{ODE})$, "
            f"ODE vs {sde}: the SDE's mean amplification relative to the ODE's, per seed [95% CI over seeds]:",
            "",
            "| stage | ODE mean | SDE mean | SDE vs ODE | seeds lower | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for stage, c in claim["stages"].items():
            ode_mean = sum(p["b"] for p in c["per_seed"]) / max(len(c["per_seed"]), 1)
            sde_mean = sum(p["a"] for p in c["per_seed"]) / max(len(c["per_seed"]), 1)
            lines.append(
                f"| {stage} | {_f(ode_mean, 3)} | {_f(sde_mean, 3)} | {_effect(c['effect'], 'relative')} | "
                f"{c['agree']}/{c['seeds']} | {VERDICT_MARK[c['verdict']]} |"
            )
        net = claim["network"]
        lines.append(
            f"| all (geometric mean) | | | {_effect(net['effect'], 'relative')} | {net['agree']}/{net['seeds']} | "
            f"{VERDICT_MARK[net['verdict']]} |"
        )
        lines.append("")
    return lines


def _span(row: dict, key: str) -> str:
    values = sorted(s[key] for s in row["seeds"].values())
    median = (
        values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
    )
    return f"{_f(median, 3)} ({_f(values[0], 3)} to {_f(values[-1], 3)})"


def section_completeness(results: dict) -> list[str]:
    """Completeness residuals per network, solver and method."""
    cfg = results["config"]
    comp = results["completeness"]
    if not comp:
        return []
    ig = cfg["ig_steps"]
    lines = [
        "## Completeness residual (eq. 9)",
        "",
        r"The residual is $\lvert\sum_k (A_k(x') - A_k(x)) - (F(x') - F(x))\rvert$.",
        "",
        f"$x' = x$ + uniform noise of radius {cfg['radius']}; mean residual over images and seeds, and beside it "
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
                _f(methods[m]["mean"]) if m in methods else "–"
                for m in ("integrated_gradients", "integrated_gradients_x10", "deeplift", "deeplift_shap")
            ]
            lines.append(
                f"| {model} | {solver} | " + " | ".join(cells) + f" | {_f(methods['output_change']['mean'])} |"
            )
    lines.append("")
    return lines


def section_noise_sweep(results: dict) -> list[str]:
    """The noise sweep."""
    sweep = results["noise_sweep"]
    if len(sweep) < 2:
        return []
    methods = list(sweep[0]["sensitivity"])
    stages = list(sweep[0]["amplification"])
    lines = [
        "## Noise sweep",
        "",
        "Means over seeds [95% CI over seeds].",
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
            f"| {row['sigma']:g} | {_ci(row['test_accuracy'])} | "
            + " | ".join(_ci(row["sensitivity"][m], 3) if m in row["sensitivity"] else "–" for m in methods)
            + " | "
            + " | ".join(_ci(row["amplification"][s], 3) if s in row["amplification"] else "–" for s in stages)
            + " |"
        )
    lines.append("")
    return lines


def section_figures(results: dict) -> list[str]:
    """The list of figures."""
    paths = sorted(results["figures"].values()) + sorted(results.get("plots", {}).values())
    if not paths:
        return []
    return ["## Figures", ""] + [f"- `{p}`" for p in paths] + [""]


SECTIONS = (
    section_header,
    section_verdicts,
    section_networks,
    section_sensitivity,
    section_robustness,
    section_localisation,
    section_theorem1,
    section_explains,
    section_completeness,
    section_noise_sweep,
    section_figures,
)


def tables(results: dict) -> str:
    """The Markdown report: every section in turn."""
    return "\n".join(line for section in SECTIONS for line in section(results))
