"""The networks of a run: test accuracy per training seed, and how long each took to train."""

from __future__ import annotations

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
    return {"models": out, "accuracy_gap": ACCURACY_GAP}


def tables(results: dict) -> list[str]:
    """The networks and their accuracy per seed."""
    seeds = [str(s) for s in results["seeds"]]
    rows = [
        [
            name,
            f"{m['sigma']:g}",
            *(number(m["accuracy"].get(s), 4) for s in seeds),
            ci(m["test_accuracy"]),
            m["epochs"] or "–",
        ]
        for name, m in sorted(results["models"].items(), key=lambda kv: (kv[0].startswith("shapes"), kv[1]["sigma"]))
    ]
    return [
        "## Networks",
        "",
        f"Test accuracy per training seed; pairs whose accuracies differ by more than "
        f"{results['accuracy_gap']:g} are flagged in the tables (the paper compares networks at equal accuracy).",
        "",
        *markdown_table(["network", "σ", *(f"seed {s}" for s in seeds), "mean [95% CI]", "epochs"], rows),
        "",
    ]


NETWORKS = Section("networks", summarise, page="sensitivity", tables=tables)
