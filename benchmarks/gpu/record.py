"""The ``record`` section: ``gpu.md`` from ``gpu.json``, the terminal summary, and ``docs/gpu.md``.

    python -m benchmarks.gpu --publish DIR/gpu.json [--docs docs]

copies a GPU run's ``gpu.json`` to ``docs/data/gpu.json`` and writes ``docs/gpu.md`` from
it; ``page(None)`` is the page before any GPU run. A dry run (``--device cpu`` or
``--tiny``) is refused: its figures mean nothing.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from ..common import atomic_write_text
from .sections import SECTIONS, load

GPU_COMMAND = """\
pip install -e ".[bench]"          # or, where torch is installed already, see below
python -m benchmarks.gpu --out results-gpu --budget 360
python -m benchmarks.gpu --publish results-gpu/gpu.json   # this page, from the run"""

OFFLINE = """\
# with network: the pure-Python packages torch's own image may lack, as wheels
pip download --no-deps --only-binary=:all: -d .whl torchsde==0.2.6 trampoline==0.1.2 captum==0.9.0
# on the GPU machine, from the repository root with .whl/ beside it; its torch stays as it is
python3 -m pip install -q --no-index --no-deps --target .site .whl/*.whl
PYTHONPATH=$PWD:$PWD/.site python3 -m benchmarks.gpu --out results-gpu --budget 360"""

SPEED_LABELS = {
    "ode/torchvision": "ODE ÷ torchvision",
    "sde/ode": "SDE ÷ ODE",
    "ode/discrete": "ODE ÷ discrete twin",
    "ode_compiled/torchvision_compiled": "compiled ODE ÷ compiled torchvision",
    "ode_compiled/ode": "compiled ODE ÷ eager ODE",
    "sde/torchvision": "SDE ÷ torchvision",
}
METHOD_TITLES = {
    "saliency": "Saliency",
    "integrated_gradients": "Integrated Gradients",
    "deeplift": "DeepLIFT",
    "deeplift_shap": "DeepLIFT-SHAP",
}


def _n(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table (pipes in cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _met(value, target) -> str:
    if value is None or target is None:
        return ""
    return "yes" if value <= target else "**missed**"


def _duration(seconds) -> str:
    if seconds is None:
        return "–"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s"


def _section(record: dict, name: str) -> dict:
    return record.get("sections", {}).get(name) or {}


def _in_order(record: dict) -> list[tuple[str, dict]]:
    """The sections in the order they run (``gpu.json`` keeps its keys sorted)."""
    sections = record.get("sections", {})
    return [(n, sections[n]) for n in SECTIONS if n in sections] + [
        (n, e) for n, e in sections.items() if n not in SECTIONS
    ]


def _line_name(line: dict) -> str:
    return f"{line['precision']} {line['phase']}"


# -- the sections' tables ---------------------------------------------------------------
def sections_table(record: dict) -> str:
    rows = []
    for name, entry in _in_order(record):
        note = entry.get("reached") or ""
        if entry.get("error"):
            note = f"{entry['error']['type']}: {entry['error']['message'].splitlines()[0][:160]}"
        rows.append([name, entry.get("status"), _n(entry.get("seconds"), 1), _n(entry.get("share_s"), 0), note])
    return table(["section", "status", "seconds", "share (s)", "note"], rows)


def environment_md(env: dict) -> str:
    if not env:
        return "Not recorded."
    gpu = env.get("gpu") or {}
    rows = []
    if gpu:
        rows += [
            ["GPU", f"{gpu.get('name')} ×{gpu.get('count')}, {gpu.get('memory_gib')} GiB, "
             f"compute capability {gpu.get('capability')}"],
            ["driver / CUDA / cuDNN", f"{gpu.get('driver')} / {gpu.get('cuda')} / {gpu.get('cudnn')}"],
        ]  # fmt: skip
    else:
        rows.append(["GPU", "none (a dry run)"])
    tf32 = env.get("tf32", {})
    rows += [
        ["TF32", f"convolutions {'on' if tf32.get('cudnn_convolutions') else 'off'}, matrix products "
         f"{'on' if tf32.get('matmul') else 'off'} (float32 matmul precision {tf32.get('float32_matmul_precision')})"],
        ["cudnn.benchmark", str(env.get("cudnn_benchmark"))],
        ["Python / platform", f"{env.get('python')} / {env.get('platform')}, {env.get('cpu_count')} CPUs"],
    ]  # fmt: skip
    rows += [[name, v or "**missing**"] for name, v in env.get("versions", {}).items()]
    return table(["", ""], rows)


def correctness_md(res: dict) -> str:
    if not res:
        return "Not run."
    counts = ", ".join(f"{n} {k}" for k, n in sorted(res.get("counts", {}).items())) or "no test reported"
    text = [f"`{res.get('command', '')}`: {counts} (pytest: {res.get('summary') or 'no summary line'})."]
    rows = [
        [name, t["outcome"], _n(t.get("seconds"), 2), t.get("reason", "")] for name, t in res.get("tests", {}).items()
    ]
    if rows:
        text.append(table(["test", "outcome", "seconds", "reason"], rows))
    return "\n\n".join(text)


def speed_md(res: dict) -> str:
    lines = res.get("lines") or []
    if not lines:
        return "Not measured."
    sizes = res.get("sizes", {})
    timer = next((line["timer"] for line in lines if "timer" in line), "CUDA events")
    intro = (
        f"`{sizes.get('arch')}` at {sizes.get('size')}×{sizes.get('size')}; per line, {sizes.get('rounds')} rounds "
        f"at most of {sizes.get('inner')} calls each, timed by the {timer} after a warm-up. Ratios: median of the "
        "per-round ratios, with quartiles. Peak memory: what one call adds to the memory allocated before it."
    )
    tf32 = res.get("tf32")
    if tf32 is not None:
        on = [k for k in ("convolutions", "matmul") if tf32.get(k)]
        intro += f" fp32 lines: TF32 {'on for ' + ' and '.join(on) if on else 'off'} (PyTorch's settings as found)."
    if res.get("cudnn_benchmark"):
        intro += " cuDNN chooses its algorithms by measuring (`cudnn.benchmark`), during the warm-up."
    ratio_rows, model_rows, errors = [], [], []
    for line in lines:
        if "error" in line:
            errors.append(f"- {_line_name(line)}: `{line['error'][:300]}`")
            continue
        for name, r in line["ratios"].items():
            ratio_rows.append([
                _line_name(line), line["batch"], SPEED_LABELS.get(name, name), _n(r["median"]),
                f"[{_n(r['q1'])}, {_n(r['q3'])}]", _n(r.get("target"), 2), _met(r["median"], r.get("target")),
                line["rounds"],
            ])  # fmt: skip
        memory = line.get("memory_ratio", {}).get("ode/torchvision")
        if memory is not None:
            target = line.get("memory_ratio_target")
            ratio_rows.append([
                _line_name(line), line["batch"], "peak memory ODE ÷ torchvision", _n(memory), "", _n(target, 2),
                _met(memory, target), 1,
            ])  # fmt: skip
        for name, m in line["models"].items():
            model_rows.append([
                _line_name(line), name, _n(m.get("images_per_s"), 1), _n(1000 * m["seconds"], 2),
                _n(m.get("peak_mib"), 0),
            ])  # fmt: skip
        if "backend" in line:
            compile_s = ", ".join(f"{k[:-10]} {v:.1f} s" for k, v in line.items() if k.endswith("_compile_s"))
            errors.append(f"- {_line_name(line)}: backend `{line['backend']}`, first call (compilation) {compile_s}")
    parts = [
        intro,
        table(["line", "batch", "ratio", "median", "[q1, q3]", "target", "met", "rounds"], ratio_rows),
        table(["line", "model", "images/s", "ms per call", "peak MiB"], model_rows),
    ]
    if errors:
        parts.append("\n".join(errors))
    return "\n\n".join(parts)


def protocol_md(res: dict, device: str = "cuda") -> str:
    if not res:
        return "Not run."
    parts = [
        f"`{res.get('command', '')}` (WORK: a temporary folder with the synthetic ImageFolder and the weights): "
        f"exit code {res.get('exit_code')}, {_n(res.get('run_s'), 1)} s, parts with results: "
        f"{', '.join(res.get('parts_reached', [])) or 'none'}."
    ]
    rows = []
    for net, methods in res.get("per_image_s", {}).items():
        for method in sorted(methods, key=lambda m: list(METHOD_TITLES).index(m) if m in METHOD_TITLES else 99):
            t = methods[method]
            rows.append([net, METHOD_TITLES.get(method, method), _n(t["first_rep"]), _n(t["later_reps"])])
    if rows:
        parts.append("Seconds per (image, method, repetition), max-sensitivity with its perturbations included:")
        parts.append(table(["network", "method", "first repetition", "later repetitions"], rows))
    rows = [[n, _n(t.get("seconds"), 1), _n(t.get("images_per_s"), 1)] for n, t in res.get("fine_tuning", {}).items()]
    if rows:
        parts.append("Fine-tuning in the run (data loading included):")
        parts.append(table(["network", "seconds", "images/s"], rows))
    steps = res.get("train_step")
    if steps:
        rows = [[n, _n(v, 1)] for n, v in steps["images_per_s"].items()]
        rows += [[SPEED_LABELS.get(k, k), f"{_n(r['median'])} [{_n(r['q1'])}, {_n(r['q3'])}]"]
                 for k, r in steps["ratios"].items()]  # fmt: skip
        parts.append(f"One training step in-process (batch {steps['batch']}, Adam, data on the device):")
        parts.append(table(["", "images/s or ratio"], rows))
    ex = res.get("extrapolation") or {}
    if ex.get("complete"):
        a = ex["assumes"]
        parts.append(
            f"Extrapolated full protocol on one `{device}` ({a['images']} images × {a['repetitions']} repetitions "
            f"× 4 methods × 2 networks, fine-tuning both for {a['epochs']} epoch of {a['train_images']:,} images, "
            f"{a['seeds']} seeds): attributions {_duration(ex['attributions_per_seed_s'])} and fine-tuning "
            f"{_duration(ex['fine_tuning_per_seed_s'])} per seed, **{_duration(ex['total_s'])}** in all "
            "(data loading and the other parts of the main job not included)."
        )
        if "ranks_for_an_hour" in ex:
            ranks = ex["ranks_for_an_hour"]
            parts.append(
                f"Within one hour as one torchrun job ([Running at scale](scale.md)): at least **{ranks}** such GPUs "
                "(linear DDP fine-tuning, cells shared out evenly)."
                if ranks is not None
                else "Within one hour as one torchrun job: not possible, one measurement cell alone takes longer."
            )
    return "\n\n".join(parts)


def errors_md(record: dict) -> str:
    out = []
    for name, entry in _in_order(record):
        err = entry.get("error")
        if err:
            frames = "\n".join(err.get("frames", []))
            out.append(f"**{name}**: `{err['type']}`: {err['message'][:1000]}\n\n```\n{frames}\n```")
    return "\n\n".join(out)


def summary_rows(record: dict) -> list[list[str]]:
    """The target rows: what, median, target, met."""
    rows = []
    for line in _section(record, "speed").get("result", {}).get("lines", []):
        for name, r in line.get("ratios", {}).items():
            if r.get("target") is not None:
                rows.append([f"{SPEED_LABELS.get(name, name)}, {_line_name(line)}", _n(r["median"]),
                             _n(r["target"], 2), _met(r["median"], r["target"]).strip("*")])  # fmt: skip
        memory = line.get("memory_ratio", {}).get("ode/torchvision")
        if memory is not None:
            t = line.get("memory_ratio_target")
            rows.append([f"peak memory ODE ÷ tv, {_line_name(line)}", _n(memory), _n(t, 2), _met(memory, t).strip("*")])
    ex = _section(record, "protocol").get("result", {}).get("extrapolation") or {}
    if ex.get("complete"):
        rows.append([f"full protocol on one {record.get('device')} (extrapolated)", _duration(ex["total_s"]), "", ""])
    return rows


def markdown(record: dict, level: int = 1) -> str:
    """Every table of a run, as one Markdown page (``level``: the heading level of its title)."""
    h = "#" * level
    env = _section(record, "environment").get("result", {})
    gpu = (env.get("gpu") or {}).get("name", "no GPU")
    dry = " (dry run: tiny sizes, the figures mean nothing)" if record.get("tiny") else ""
    body = [
        f"{h} GPU check on {gpu}{dry}",
        f"`{record.get('command') or 'python -m benchmarks.gpu'}` on `{record.get('device')}`, started "
        f"{record.get('started_at')}, budget {_n(record.get('budget_s'), 0)} s, "
        f"elapsed {_n(record.get('elapsed_s'), 0)} s.",
        f"{h}# Sections",
        sections_table(record),
        f"{h}# Targets",
        table(["what", "measured", "target", "met"], summary_rows(record))
        if summary_rows(record)
        else "None measured.",
        f"{h}# Environment",
        environment_md(env),
        f"{h}# Correctness on CUDA",
        correctness_md(_section(record, "correctness").get("result", {})),
        f"{h}# Speed",
        speed_md(_section(record, "speed").get("result", {})),
        f"{h}# The paper's protocol, scaled to fit",
        protocol_md(_section(record, "protocol").get("result", {}), record.get("device", "cuda")),
    ]
    errors = errors_md(record)
    if errors:
        body += [f"{h}# Errors", errors]
    return "\n\n".join(body) + "\n"


def terminal(record: dict) -> str:
    """A short summary that fits in 80 columns: section statuses, then the target rows."""
    lines = ["section       status    seconds"]
    for name, entry in _in_order(record):
        lines.append(f"{name:13} {entry.get('status', ''):9} {_n(entry.get('seconds'), 0):>7}")
    rows = summary_rows(record)
    if rows:
        lines.append("")
        lines.append(f"{'target':46} {'measured':>9} {'target':>7}  met")
        lines += [f"{w[:46]:46} {m:>9} {t:>7}  {ok}" for w, m, t, ok in rows]
    return "\n".join(lines)


# -- the documentation page -------------------------------------------------------------
def page(record: dict | None) -> str:
    """``docs/gpu.md``: the measured tables of a GPU run, or, before one, how to make it."""
    head = [
        "# On a GPU",
        "<!-- Generated by `python -m benchmarks.gpu --publish`; do not edit. -->",
        "`python -m benchmarks.gpu` checks and measures the library on one CUDA GPU in about six minutes: "
        "the environment, the tests marked `cuda`, the speed of the ODE and SDE twins against torchvision "
        "(ResNet-50 at 224×224, fp32 and bf16 autocast with channels_last, Captum's DeepLift, `torch.compile`) "
        "with images per second and peak memory, and the paper's ImageNet protocol scaled to fit, extrapolated "
        "to the full protocol. Each section writes its result as soon as it is done.",
    ]
    run_it = [
        "## Running it",
        f"```bash\n{GPU_COMMAND}\n```",
        "On a machine without network whose Python has torch, torchvision and torchdiffeq but not torchsde "
        "and captum, use the repository in place:",
        f"```bash\n{OFFLINE}\n```",
        "`--device cpu` is a dry run at tiny sizes (the test suite runs it); `--only speed` runs one section; "
        "`--help` lists the options. The command needs no data and no weights: the protocol section makes a "
        "synthetic ImageFolder and a randomly initialised network.",
    ]
    if record is None:
        return "\n\n".join([
            *head,
            '!!! warning "Nothing has been measured on a GPU yet"\n'
            "    No run of this command on a GPU has been published: this page will show the first one's tables. "
            "Until then the library's CUDA path is tested only by the tests marked `cuda` "
            "(`python -m pytest -m cuda`), which are skipped on a machine without a GPU.",
            "## What it will measure",
            targets_md(),
            *run_it,
        ]) + "\n"  # fmt: skip
    return "\n\n".join([*head, *run_it, "## Measured", markdown(record, level=3)]) + "\n"


def targets_md() -> str:
    """The speed section's targets, as a table."""
    from ..targets import TARGETS
    from .speed import SIZES

    gpu = SIZES["gpu"]
    what = {
        "forward": f"forward, batch {gpu['forward']}",
        "forward+backward": f"forward + backward, batch {gpu['train']}",
        "deeplift": f"Captum's DeepLift, batch {gpu['deeplift']}",
        "memory": "peak memory of a call",
    }
    rows = [[SPEED_LABELS.get(ratio, ratio), what[phase], f"≤ {t:.2f}"] for (phase, ratio), t in TARGETS["gpu"].items()]
    return (
        f"`{gpu['arch']}` at {gpu['size']}×{gpu['size']}, in fp32 and in bf16 autocast with channels_last; the "
        "SDE (Euler–Maruyama) with its noise on. Each ratio is the median over rounds in which the models run side "
        "by side:\n\n" + table(["ratio", "of", "target"], rows)
    )


def publish(source: str | Path, docs: str | Path = "docs") -> None:
    """Copy a GPU run's ``gpu.json`` into ``docs/data/`` and write ``docs/gpu.md`` from it."""
    record = load(source)
    if record.get("tiny") or not str(record.get("device", "")).startswith("cuda"):
        raise ValueError(f"{source}: a dry run (device {record.get('device')}, tiny sizes); publish a GPU run")
    docs = Path(docs)
    target = docs / "data" / "gpu.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    if Path(source).resolve() != target.resolve():
        shutil.copyfile(source, target)
    atomic_write_text(docs / "gpu.md", page(record))


def published(docs: str | Path = "docs") -> dict | None:
    """The record behind ``docs/gpu.md``, or None before any GPU run."""
    path = Path(docs) / "data" / "gpu.json"
    return json.loads(path.read_text()) if path.exists() else None
