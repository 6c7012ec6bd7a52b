"""Runs on other data beside the pages' run: CIFAR-10 with pretrained ResNets beside the digits, claim by claim.

A theory page is generated from one run (the digits' full preset). Runs of the same
claims on natural images (``python -m benchmarks --preset cifar10``, ``cifar10-resnet56``)
stand beside it: for each claim of the page, one row per setting with each run's verdict
and effect, a sentence saying where the runs disagree, and where the other runs come from
(data, weights, accuracies before and after fine-tuning, the equal-accuracy check).

Rows are matched by claim and setting; a row with no exact partner is matched by claim
and setting without its σ (the runs' noise levels may differ: ResNet-56's dose-response
row spans σ = 0 to 0.5, the digits' 0 to 0.75), and its cell then names its own σ.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..networks import ODE, Network
from .formatting import VERDICT_MARK, effect, markdown_table, number
from .stats import ACCURACY_GAP

__all__ = ["Beside", "disagreements", "label_of", "match_rows", "page_lines", "provenance_lines"]

_SIGMA = re.compile(r"(,\s*)?σ = [^,]+")
JPEG_CAVEAT = (
    "The CIFAR-10 images are the JPEG copy of CIFAR-10 (all 60,000 images, re-encoded as lossy JPEG): networks trained "
    "on the original images lose about ten points of accuracy on them (ResNet-20: 91.7% claimed on the originals, "
    "81.0% on these test JPEGs), which is why every twin is fine-tuned on them first, the ODE twin too. No accuracy "
    "below is a CIFAR-10 accuracy in the usual sense."
)


@dataclass(frozen=True)
class Beside:
    """A run shown beside the pages' run: its label (``cifar10-resnet20``), results and run log."""

    label: str
    results: dict
    runs: list


def label_of(results: dict) -> str:
    """``cifar10-resnet20``: the data set and architecture of a run."""
    cfg = results["config"]
    data = cfg["data"] if cfg["data"] in ("digits", "cifar10") else "imagenet"
    return f"{data}-{cfg['arch']}"


def title_of(label: str) -> str:
    """``CIFAR-10, ResNet-20`` for ``cifar10-resnet20``."""
    data, arch = label.split("-", 1)  # not a network's name: a run's label, <data>-<arch>
    data = {"cifar10": "CIFAR-10", "imagenet": "ImageNet", "digits": "digits"}.get(data, data)
    arch = re.sub(r"^resnet(\d+)$", r"ResNet-\1", arch)
    return f"{data}, {arch}"


def _strip(setting: str) -> str:
    return _SIGMA.sub("", setting).strip(" ,")


def match_rows(base: list[dict], others: list[list[dict]]) -> list[list[dict | None]]:
    """One line per setting: the base run's row and each other run's matching row (None where it has none).

    Lines follow the base run's order; an other run's rows without a partner in the base
    run follow, in that run's order.
    """
    lines: list[list[dict | None]] = [[row] + [None] * len(others) for row in base]
    for j, rows in enumerate(others, start=1):
        exact = {(r["claim"], r["setting"]): i for i, r in enumerate(base)}
        loose: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(base):
            loose.setdefault((r["claim"], _strip(r["setting"])), []).append(i)
        for row in rows:
            i = exact.get((row["claim"], row["setting"]))
            if i is None:
                candidates = [k for k in loose.get((row["claim"], _strip(row["setting"])), []) if lines[k][j] is None]
                i = candidates[0] if len(candidates) == 1 else None
            if i is None or lines[i][j] is not None:
                extra = [None] * (len(others) + 1)
                extra[j] = row
                lines.append(extra)
            else:
                lines[i][j] = row
    return lines


def unequal_seeds(results: dict) -> dict[float, int]:
    """Per σ of the run's SDE networks: how many seeds are more than ``ACCURACY_GAP`` from the same seed's ODE twin."""
    models = results.get("models", {})
    ode = models.get(ODE, {}).get("accuracy", {})
    out = {}
    for name, m in models.items():
        net = Network.parse(name)
        if not net.is_ode and not net.shapes and net.stages is None:
            out[m["sigma"]] = sum(
                abs(acc - ode[seed]) > ACCURACY_GAP for seed, acc in m["accuracy"].items() if seed in ode
            )
    return out


def _accuracy_flag(row: dict, results: dict | None) -> str:
    """``; unequal accuracy at σ = 0.75 (5/5 seeds)`` where the row compares networks the check flags."""
    if results is None or not row["claim"].startswith(("sensitivity falls", "SDE attributions are less sensitive")):
        return ""
    found = _SIGMA.search(row["setting"])
    if not found:
        return ""
    span = [float(v) for v in re.findall(r"[\d.]+", found.group(0))]
    flagged = unequal_seeds(results)
    n = len(results["seeds"])
    hit = [
        (s, k) for s, k in sorted(flagged.items()) if k and (s in span or (len(span) == 2 and span[0] < s <= span[1]))
    ]
    if not hit:
        return ""
    return "; unequal accuracy at " + ", ".join(f"σ = {s:g} ({k}/{n} seeds)" for s, k in hit)


def _cell(row: dict | None, setting: str, results: dict | None = None) -> str:
    if row is None:
        return "–"
    text = f"{VERDICT_MARK[row['verdict']]}: {effect(row['effect'], row['unit'])}"
    if row["unit"] not in ("relative", "accuracy", "mass on object"):
        text += f" ({row['unit']})"
    if row["setting"] != setting:
        own = _SIGMA.search(row["setting"])
        text += f" ({own.group(0).strip(', ') if own else row['setting']})"
    if row.get("seeds") is not None:
        text += f", {row['agree']}/{row['seeds']} seeds"
    return text + _accuracy_flag(row, results)


def disagreements(lines: list[list[dict | None]], labels: list[str]) -> dict[str, list]:
    """Lines where the runs decide a row the opposite way (``flips``) or one decides it and another not (``moves``)."""
    out: dict[str, list] = {"flips": [], "moves": []}
    for line in lines:
        decided = {labels[k]: r["verdict"] for k, r in enumerate(line) if r is not None}
        if len(decided) < 2:
            continue
        verdicts = set(decided.values())
        if {"holds", "fails"} <= verdicts:
            out["flips"].append(line)
        elif len(verdicts) > 1:
            out["moves"].append(line)
    return out


def _verdicts(line: list[dict | None], labels: list[str]) -> str:
    return ", ".join(f"{r['verdict']} on {title_of(labels[k]) if k else 'the digits'}"
                     for k, r in enumerate(line) if r is not None)  # fmt: skip


def _grouped(lines: list[list[dict | None]], labels: list[str]) -> str:
    """``*claim* (settings: holds on the digits, depends on CIFAR-10, ResNet-20); ...``, by claim and verdicts."""
    groups: dict[tuple[str, str], list[str]] = {}
    for line in lines:
        row = next(r for r in line if r is not None)
        groups.setdefault((row["claim"], _verdicts(line, labels)), []).append(row["setting"])
    parts = []
    for (claim, verdicts), settings in groups.items():
        where = "; ".join(settings) if len(settings) <= 4 else f"{len(settings)} settings"
        parts.append(f"*{claim}* ({where}: {verdicts})")
    return "; ".join(parts)


def _sentence(lines: list[list[dict | None]], labels: list[str]) -> str:
    """One sentence: where the runs disagree, and where one decides what another leaves open."""
    found = disagreements(lines, labels)
    shared = sum(sum(r is not None for r in line) >= 2 for line in lines)
    if not shared:
        return "No row of this page is measured both on the digits and on CIFAR-10."
    if found["flips"]:
        text = (f"**CIFAR-10 and the digits disagree** on {len(found['flips'])} of the {shared} rows both measure: "
                + _grouped(found["flips"], labels))  # fmt: skip
    else:
        text = f"No row that both measure is decided one way on the digits and the other on CIFAR-10 ({shared} rows)"
    if found["moves"]:
        n = len(found["moves"])
        text += (f"; {n} {'rows are' if n != 1 else 'row is'} decided on one and left open (*depends*) on another: "
                 + _grouped(found["moves"], labels))  # fmt: skip
    return text + "."


def page_lines(base: dict, others: list[Beside], rows_of, *, provenance_link: str) -> list[str]:
    """A page's claims on the digits beside the other runs: a table, one sentence on the differences, a link.

    Args:
        base: the pages' run (the digits).
        others: the runs beside it.
        rows_of: ``results -> the page's verdict rows`` (its sections' rows).
        provenance_link: where the other runs' provenance is (``page.md#anchor``).
    """
    if not others:
        return []
    labels = ["digits", *(o.label for o in others)]
    lines = match_rows(rows_of(base), [rows_of(o.results) for o in others])
    lines = [line for line in lines if any(r is not None for r in line[1:])]
    if not lines:
        return [f"This page's claims are not measured on {', '.join(title_of(o.label) for o in others)}."]
    table = []
    for line in lines:
        first = next(r for r in line if r is not None)
        setting = line[0]["setting"] if line[0] is not None else first["setting"]
        runs = [base, *(o.results for o in others)]
        table.append([first["claim"], setting, *(_cell(r, setting, res) for r, res in zip(line, runs))])
    header = ["claim", "setting", "digits (small ResNet)", *(title_of(o.label) for o in others)]
    return [
        f"The same claims on natural images: CIFAR-10 with He et al.'s pretrained "
        f"{' and '.join(title_of(o.label).split(', ')[1] for o in others)}, each fine-tuned as ODE and SDE twins "
        f"identically (where the runs come from: [CIFAR-10 provenance]({provenance_link})). Each cell: verdict: "
        "effect [95% CI over seeds], the seeds pointing the claimed way, and, where a sensitivity row compares "
        f"networks more than {100 * ACCURACY_GAP:g} points of test accuracy apart, in how many seeds they are: such "
        "a row may reflect the accuracy the noise cost rather than the noise itself.",
        "",
        *markdown_table(header, table),
        "",
        _sentence(lines, labels),
    ]


def _seconds(runs: list) -> float:
    return sum(r.get("seconds", 0) for r in runs)


def _shown_argv(argv: list[str]) -> list[str]:
    """The command as a reader would type it: ``--out`` names the run's folder, not where it was on disk."""
    shown = list(argv)
    for i, arg in enumerate(shown[:-1]):
        if arg == "--out":
            shown[i + 1] = shown[i + 1].rstrip("/").rsplit("/", 1)[-1]
    return [a for a in shown if a != "--quiet"]


def _cost(results: dict) -> str:
    """The computing its cells took, which counts sessions cut off before they recorded their time."""
    seconds = results.get("compute_seconds")
    if not seconds:
        return ""
    train, untimed = seconds.get("train", 0.0), results.get("untimed_networks", 0)
    without = (
        f"; {untimed} network{'s were' if untimed != 1 else ' was'} read from checkpoints whose training time is "
        "not recorded and count none"
        if untimed
        else ""
    )
    return (
        f" (its cells took {sum(seconds.values()):.0f} s of computing in all, training {train:.0f} s of it{without}; "
        "a session cut off before it finishes records no time of its own, its cells do)"
    )


def provenance_lines(others: list[Beside]) -> list[str]:
    """Where each run beside the digits comes from: command, machine, data, weights, accuracies, equal accuracy."""
    out = [JPEG_CAVEAT, ""]
    for o in others:
        r, cfg, env = o.results, o.results["config"], o.results["environment"]
        finished = [x for x in o.runs if x.get("status") == "finished"]
        argv = _shown_argv((finished or o.runs or [{"argv": []}])[0]["argv"])
        sessions = f" over {len(o.runs)} sessions (resumed)" if len(o.runs) > 1 else ""
        threads = env.get("torch_threads")
        out += [
            f"#### {title_of(o.label)}",
            "",
            f"`python -m benchmarks {' '.join(argv)}` (preset `{r.get('preset')}`, configuration digest "
            f"`{r['digest']}`) took {_seconds(o.runs):.0f} s{sessions}{_cost(r)} on {env.get('processor')} with "
            f"{env.get('cpu_count')} CPUs ({threads} torch thread{'s' if threads != 1 else ''}), device "
            f"`{env.get('device')}`; torch {env['versions']['torch']}, captum {env['versions']['captum']}. "
            f"Data: `{cfg.get('data_root')}`, {cfg.get('train_images') or 'all'} training images (a seeded draw) for "
            f"{cfg['epochs']} epoch{'s' if cfg['epochs'] != 1 else ''} of Adam at {cfg['lr']:g} with a "
            f"{cfg.get('schedule', 'constant')} schedule, batch {cfg['batch_size']}"
            f"{', BatchNorm statistics recomputed' if cfg.get('recalibrate') else ''}; {cfg['eval_images'] or 'all'} "
            f"test images for the accuracies and the images measured; training seeds "
            f"{', '.join(map(str, r['seeds']))} (data order and noise: every twin starts from the same weights); "
            f"noise magnitudes {', '.join(f'{s:g}' for s in cfg['sigmas'])}; max-sensitivity radius "
            f"{cfg['radius']:g} in normalised input units, {cfg['n_perturb']} perturbations, {cfg['n_images']} images "
            f"per seed.",
            "",
            *_accuracy_lines(r),
        ]
    return out


def _accuracy_lines(results: dict) -> list[str]:
    start = results.get("start") or {}
    models = results.get("models", {})
    seeds = [str(s) for s in results["seeds"]]
    ode = models.get(ODE, {}).get("accuracy", {})
    rows, flagged_any = [], {}
    for name, m in sorted(models.items(), key=lambda kv: kv[1]["sigma"]):
        gaps = [abs(m["accuracy"][s] - ode[s]) for s in seeds if s in m["accuracy"] and s in ode]
        flagged = [
            s for s in seeds if s in m["accuracy"] and s in ode and abs(m["accuracy"][s] - ode[s]) > ACCURACY_GAP
        ]
        flagged_any[name] = flagged
        acc = m["test_accuracy"]
        rows.append([
            name, f"{m['sigma']:g}", number(start.get("test_accuracy"), 4),
            f"{number(acc['mean'], 4)} [{number(acc['low'], 4)}, {number(acc['high'], 4)}]",
            "–" if name == ODE else number(max(gaps) if gaps else math.nan, 4),
            "–" if name == ODE else f"{len(flagged)} of {len(seeds)}",
        ])  # fmt: skip
    weights = (
        f"Every twin starts from `{start['weights']}` (SHA-256 `{start['sha256'][:16]}…`), He et al.'s ResNet "
        "pretrained on the original CIFAR-10 (akamaster/pytorch_resnet_cifar10, BSD-2-Clause); "
        if start
        else ""
    )
    unequal = sorted(n for n, f in flagged_any.items() if f)
    check = (
        f"The equal-accuracy check (a network more than {100 * ACCURACY_GAP:g} points from the same seed's ODE twin is "
        f"flagged, as on the digits): " + (
            f"**fails** for {', '.join(unequal)}: their rows compare networks of unequal accuracy."
            if unequal else "passes for every network and seed."
        )
    )  # fmt: skip
    return [
        f"{weights}before fine-tuning, in eval mode with the noise off, every twin is that network. Test accuracy "
        "before and after fine-tuning (mean over seeds [95% CI]):",
        "",
        *markdown_table(["network", "σ", "before", "after", "largest gap to the ODE twin", "seeds flagged"], rows),
        "",
        check,
        "",
    ]
