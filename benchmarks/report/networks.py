"""The networks of a run: test accuracy per training seed, and how long each took to train."""

from __future__ import annotations

from ..networks import Network
from ..store import Store
from .formatting import ci, markdown_table, number
from .section import Section
from .stats import ACCURACY_GAP, mean_ci

__all__ = ["NETWORKS"]


def summarise(store: Store, results: dict) -> dict:
    """Per network: the accuracy of each seed, its mean and spread, and the training record."""
    out: dict = {}
    trained = store.results("train")
    for key, cell in store.results("accuracy").items():
        seed = int(key.split("/")[0][1:])
        entry = out.setdefault(
            cell["model"], {"sigma": cell["sigma"], "accuracy": {}, "train_seconds": {}, "epochs": None}
        )
        entry["accuracy"][seed] = cell["test_accuracy"]
        rec = trained.get(key, {})
        entry["train_seconds"][seed] = rec.get("train_seconds")
        entry["epochs"] = rec.get("epochs")
        entry["source"] = rec.get("source")
    for entry in out.values():
        acc = list(entry["accuracy"].values())
        entry["test_accuracy"] = mean_ci(acc)
        entry["accuracy"] = {str(s): v for s, v in sorted(entry["accuracy"].items())}
        entry["train_seconds"] = {str(s): v for s, v in sorted(entry["train_seconds"].items())}
    start = store.results("start_accuracy").get("pretrained")
    return {"models": out, "accuracy_gap": ACCURACY_GAP, "start": start}


def _start(start: dict | None) -> list[str]:
    """The weights every network started from, and their accuracy before any training."""
    if not start:
        return []
    return [
        f"Every network starts from the weights in `{start['weights']}` (SHA-256 `{start['sha256'][:16]}…`), whose "
        f"test accuracy before any training is {number(start['test_accuracy'], 4)} on the same "
        f"{start['test_images']} test images: in eval mode, with the noise off, that is every network's accuracy "
        "before fine-tuning.",
        "",
    ]


#: Beyond this many seeds the accuracies are a table with one row per seed.
WIDE = 6


def _gap(results: dict, seed: str) -> float | None:
    """The largest accuracy difference between a network of ``seed`` and its ODE twin (main and shapes)."""
    models, gaps = results["models"], []
    for name, m in models.items():
        twin = Network(shapes=Network.parse(name).shapes).name
        if name != twin and twin in models and seed in m["accuracy"] and seed in models[twin]["accuracy"]:
            gaps.append(abs(m["accuracy"][seed] - models[twin]["accuracy"][seed]))
    return max(gaps) if gaps else None


def tables(results: dict) -> list[str]:
    """The networks and their accuracy per seed (one column per seed, or one row per seed for many seeds)."""
    seeds = [str(s) for s in results["seeds"]]
    order = sorted(results["models"].items(), key=lambda kv: (Network.parse(kv[0]).shapes, kv[1]["sigma"]))
    lines = [
        "## Networks",
        "",
        f"Test accuracy per training seed; pairs whose accuracies differ by more than "
        f"{results['accuracy_gap']:g} are flagged in the tables (the paper compares networks at equal accuracy).",
        "",
        *_start(results.get("start")),
    ]
    if len(seeds) <= WIDE:
        rows = [
            [name, f"{m['sigma']:g}", *(number(m["accuracy"].get(s), 4) for s in seeds), ci(m["test_accuracy"]),
             m["epochs"] or "–"]
            for name, m in order
        ]  # fmt: skip
        header = ["network", "σ", *(f"seed {s}" for s in seeds), "mean [95% CI]", "epochs"]
        return [*lines, *markdown_table(header, rows), ""]
    summary = [
        [name, f"{m['sigma']:g}", ci(m["test_accuracy"]), number(min(m["accuracy"].values()), 4),
         number(max(m["accuracy"].values()), 4), m["epochs"] or "–"]
        for name, m in order
    ]  # fmt: skip
    gaps = {s: _gap(results, s) for s in seeds}
    flagged = [s for s, g in gaps.items() if g is not None and g > results["accuracy_gap"]]
    per_seed = [[s, *(number(m["accuracy"].get(s), 4) for _, m in order), number(gaps[s], 4)] for s in seeds]
    return [
        *lines,
        *markdown_table(["network", "σ", "mean [95% CI]", "lowest", "highest", "epochs"], summary),
        "",
        f"Per seed, with the largest difference between a network and its ODE twin: over the limit in "
        f"{len(flagged)} of {len(seeds)} seeds" + (f" ({', '.join(flagged)})." if flagged else "."),
        "",
        *markdown_table(["seed", *(name for name, _ in order), "largest gap"], per_seed),
        "",
    ]


NETWORKS = Section("networks", summarise, page="sensitivity", tables=tables)
