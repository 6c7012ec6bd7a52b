"""Speed of the continuous-time models against torchvision, measured side by side.

    python -m benchmarks.speed [--archs resnet18 resnet50] [--size 224] [--batch 4]
                               [--rounds 10] [--device cpu] [--out results]

Ratios, each formed within one round and summarised over rounds, beside their targets
(``benchmarks/targets.py``, the table the GPU benchmark reads too; some per architecture):

* ODEResNet (Euler, one step per block) forward / torchvision forward
* SDEResNet forward, noise on (Euler–Maruyama) / ODEResNet forward
* the same two ratios for forward + backward (train mode, loss = sum of logits)
* the control: a copy of the torchvision network / torchvision forward, timed alongside;
  1 on a quiet machine, its spread is the run's noise floor for the forward ratios
* drawing the Gaussian increments of one SDE forward, alone / ODEResNet forward
  (no target: the part of the SDE's extra cost that is the device's random number
  generator)
* Captum DeepLift on the ODEResNet / DeepLift on its discrete twin
  (``neuralsde.discrete.DiscreteResNet``: the same network without a solver, with a
  distinct ReLU per call site, since DeepLift cannot run on torchvision's own blocks)
* on the CPU, ways to fill those increments (torch's ``normal_`` per step or in one call,
  NumPy's PCG64 and Philox generators), in ns per value, side by side
* with ``--profile`` (CPU), where the time of each forward ratio goes: the operators whose
  self time differs most between the two models, all operators' sum, the wall time and the
  time outside operators (``benchmarks/op_profile.py``)
* with ``--compiled``, every model under ``torch.compile`` (inductor): compiled ODE /
  compiled torchvision, compiled SDE / compiled ODE, compiled / eager ODE, with the
  compile times apart and the number of calls that repay the ODE twin's

Each line gives the median of the per-round ratios with its quartiles (the verdict uses
the median) and, as a second estimate, the ratio of the fastest runs. On a shared
machine single runs scatter by 10% or more; use enough rounds for the quartiles to be
narrower than the margin to the target.

Forward passes run in eval mode under ``torch.no_grad`` (the SDE with
``eval_samples=1``, i.e. one Brownian path, noise on); forward + backward passes run all
three models in train mode, so BatchNorm does the same work in each.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings

import torch
import torchvision
from captum.attr import DeepLift
from tqdm import tqdm

from neuralsde import ODEResNet, SDEResNet
from neuralsde.discrete import DiscreteResNet

from . import op_profile
from .common import environment, paired_ratios, write_json
from .targets import target as target_of


def noise_draws(sde: SDEResNet, x: torch.Tensor) -> list[int]:
    """The sizes of the Brownian increments one forward pass of ``sde`` draws.

    Each solver step of a stage draws one increment of the stage's state size: the step
    counts are read off the forward pass, the sizes off a walk through the stages.
    """
    with torch.no_grad():
        sde(x)
        steps = [stage.stats.steps for stage in sde.stages]
        h = sde.stem(x)
        sizes: list[int] = []
        for stage, n in zip(sde.stages, steps):
            h = stage(h)
            sizes += [h.numel()] * n
    return sizes


def measure_arch(
    arch: str,
    *,
    size: int,
    batch: int,
    rounds: int,
    device: str,
    seed: int,
    compiled: bool = False,
    profile: bool = False,
) -> dict:
    """Every line of one architecture: eager forward, forward + backward, DeepLift; on the CPU also the
    noise generators for its SDE twin's draws, (``compiled``) the compiled forward and (``profile``)
    where the forward line's time goes, operator by operator."""
    torch.manual_seed(seed)
    tv = torchvision.models.get_model(arch).to(device)
    ode = ODEResNet.from_torchvision(tv).to(device)
    sde = SDEResNet.from_torchvision(tv, sigma=0.5, method="euler").to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    models = {"torchvision": tv, "ode": ode, "sde": sde}
    pairs = [("ode", "torchvision"), ("sde", "ode")]
    results = {}

    def forward(model):
        def run():
            with torch.no_grad():
                model(x)

        return run

    def forward_backward(model):
        def run():
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()

        return run

    def gaussians(sizes):
        def run():
            for n in sizes:
                torch.empty(n, device=device).normal_(0.0, 1.0)

        return run

    for phase, make in (("forward", forward), ("forward+backward", forward_backward)):
        for model in models.values():
            model.train(phase == "forward+backward")
        sde.set_noise(eval_samples=1)  # noise on in eval mode too
        runs = {name: make(m) for name, m in models.items()}
        if phase == "forward":
            draws = noise_draws(sde, x)
            runs["gaussians"] = gaussians(draws)
            # The control: a second torchvision network with the same weights, timed alongside.
            # Its ratio to the first would be 1 on a quiet machine; its spread is this run's noise floor.
            runs["torchvision copy"] = forward(copy.deepcopy(tv).eval())
        bar = tqdm(total=rounds, desc=f"{arch} {phase}", leave=False, file=sys.stderr)
        results[phase] = paired_ratios(
            runs,
            pairs + [("gaussians", "ode"), ("torchvision copy", "torchvision")] * (phase == "forward"),
            rounds=rounds,
            device=device,
            progress=lambda r, bar=bar: bar.update(1),
        )
        bar.close()
        if phase == "forward" and profile and torch.device(device).type == "cpu":
            results[phase]["profile"] = op_profile.compare({name: runs[name] for name in models}, pairs, calls=rounds)

    # DeepLift: the ODE twin against the discrete twin, both in eval mode.
    ode.eval()
    discrete = DiscreteResNet(ode)

    def deeplift(model):
        explainer = DeepLift(model)

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                explainer.attribute(x, target=0)

        return run

    bar = tqdm(total=rounds, desc=f"{arch} deeplift", leave=False, file=sys.stderr)
    results["deeplift"] = paired_ratios(
        {"ode": deeplift(ode), "discrete": deeplift(discrete)},
        [("ode", "discrete")],
        rounds=rounds,
        device=device,
        progress=lambda r, bar=bar: bar.update(1),
    )
    bar.close()
    if torch.device(device).type == "cpu":
        results["noise draws"] = noise_generators(draws, rounds=rounds, seed=seed)
        if compiled:
            results["compiled forward"] = compiled_lines(arch, size=size, batch=batch, rounds=rounds, seed=seed)
    return results


def noise_generators(sizes: list[int], *, rounds: int, seed: int = 0) -> dict:
    """Ways to fill one forward pass's Brownian increments (float32, on the CPU), timed side by side.

    Every candidate fills the same numbers of values as the SDE network's forward pass
    (``sizes``, one per solver step), with a standard normal in float32:

    * ``torch normal_``: torch's CPU generator, one call per step (what the library does);
    * ``torch normal_, one call``: the same, one call for the whole pass, split afterwards;
    * ``numpy PCG64``: NumPy's ``Generator`` (PCG64, ziggurat) writing float32 into a buffer
      torch shares (``torch.from_numpy``), one call per step;
    * ``numpy Philox``: the same with NumPy's counter-based Philox bit generator.

    Returns ``{"values": n, "seconds": {name: median}, "ns_per_value": {name: ...},
    "ratios": {name/torch normal_: {median, q1, q3, min_ratio}}}``.
    """
    import numpy as np

    total = sum(sizes)
    torch_gen = torch.Generator().manual_seed(seed)
    pcg = np.random.Generator(np.random.PCG64(seed))
    philox = np.random.Generator(np.random.Philox(seed))
    buffers = [np.empty(n, dtype=np.float32) for n in sizes]
    shared = [torch.from_numpy(b) for b in buffers]  # what a step would read: no copy

    def torch_steps():
        for n in sizes:
            torch.empty(n).normal_(0.0, 1.0, generator=torch_gen)

    def torch_once():
        torch.empty(total).normal_(0.0, 1.0, generator=torch_gen).split(sizes)

    def numpy_steps(gen):
        def run():
            for buf in buffers:
                gen.standard_normal(out=buf, dtype=np.float32)
            return shared

        return run

    runs = {
        "torch normal_": torch_steps,
        "torch normal_, one call": torch_once,
        "numpy PCG64": numpy_steps(pcg),
        "numpy Philox": numpy_steps(philox),
    }
    base = "torch normal_"
    timed = paired_ratios(runs, [(name, base) for name in runs if name != base], rounds=rounds)
    seconds = {name: t["median"] for name, t in timed["seconds"].items()}
    return {
        "values": total,
        "seconds": seconds,
        "ns_per_value": {name: 1e9 * t / total for name, t in seconds.items()},
        "ratios": timed["ratios"],
    }


def compiled_lines(arch: str, *, size: int, batch: int, rounds: int, seed: int, backend: str = "inductor") -> dict:
    """The compiled path on the CPU: each model under ``torch.compile`` (inductor), forward in eval mode.

    Ratios as for the eager lines (compiled ODE ÷ compiled torchvision, compiled SDE ÷
    compiled ODE, compiled ÷ eager for each twin), after a warm-up call that compiles; the
    compile time of each model (with inductor's caches off, as on a machine's first compile)
    is reported apart, and ``calls_to_amortise`` is how many
    calls the ODE twin's compile time takes to pay back (compile time ÷ time saved per call).
    """
    import time

    import torch._inductor.config as inductor

    torch.manual_seed(seed)
    tv = torchvision.models.get_model(arch).eval()
    ode = ODEResNet.from_torchvision(tv).eval()
    sde = SDEResNet.from_torchvision(tv, sigma=0.5, method="euler").eval()
    sde.set_noise(eval_samples=1)
    x = torch.randn(batch, 3, size, size)
    runs, compile_s = {}, {}
    cold = inductor.force_disable_caches
    inductor.force_disable_caches = True  # a compile as a machine's first: no cached graph or kernel shortens it
    try:
        for name, model in (("torchvision", tv), ("ode", ode), ("sde", sde)):
            compiled = torch.compile(model, backend=backend)
            start = time.perf_counter()
            with torch.no_grad():
                compiled(x)  # the first call compiles
            compile_s[name] = time.perf_counter() - start

            def run(m=compiled):
                with torch.no_grad():
                    m(x)

            runs[name] = run
    finally:
        inductor.force_disable_caches = cold

    def eager(model):
        def run():
            with torch.no_grad():
                model(x)

        return run

    runs["ode eager"], runs["sde eager"] = eager(ode), eager(sde)
    bar = tqdm(total=rounds, desc=f"{arch} compiled", leave=False, file=sys.stderr)
    out = paired_ratios(
        runs,
        [("ode", "torchvision"), ("sde", "ode"), ("ode", "ode eager"), ("sde", "sde eager")],
        rounds=rounds,
        progress=lambda r: bar.update(1),
    )
    bar.close()
    saved = out["seconds"]["ode eager"]["median"] - out["seconds"]["ode"]["median"]
    out["compile_s"] = compile_s
    out["calls_to_amortise"] = compile_s["ode"] / saved if saved > 0 else None
    return out


def _extras(arch: str, res: dict) -> list[str]:
    """The figures that are no ratio: ns per Gaussian value, compile times and calls to amortise them."""
    lines = []
    draws = res.get("noise draws")
    if draws:
        each = ", ".join(f"{name} {ns:.2f}" for name, ns in draws["ns_per_value"].items())
        lines.append(f"{arch:10} noise draws: {draws['values']} values per forward; ns per value: {each}")
    comp = res.get("compiled forward")
    if comp:
        times = ", ".join(f"{name} {s:.0f} s" for name, s in comp["compile_s"].items())
        calls = comp["calls_to_amortise"]
        pays = f"after {calls:.0f} calls" if calls is not None else "never (no faster than eager)"
        lines.append(f"{arch:10} compile time: {times}; the ODE twin's pays back {pays}")
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results")
    parser.add_argument(
        "--compiled", action="store_true", help="also time the models under torch.compile (minutes of compiling)"
    )
    parser.add_argument(
        "--profile", action="store_true",
        help="on the CPU, also show where each forward ratio's time goes, operator by operator (torch.profiler)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")
    if args.profile and torch.device(args.device).type != "cpu":
        parser.error("--profile splits CPU time by operator: it runs with --device cpu only")
    record = {
        "benchmark": "speed",
        "config": {
            k: getattr(args, k) for k in ("archs", "size", "batch", "rounds", "device", "seed", "compiled", "profile")
        },
        "environment": environment(args.device),
        "results": {},
    }
    print(f"{'arch':10} {'phase':17} {'ratio':17} {'median':>7} {'[q1, q3]':>17} {'min/min':>8} {'target':>7}  ok")
    for arch in args.archs:
        res = measure_arch(
            arch, size=args.size, batch=args.batch, rounds=args.rounds, device=args.device, seed=args.seed,
            compiled=args.compiled, profile=args.profile,
        )  # fmt: skip
        record["results"][arch] = res
        for phase, data in res.items():
            for ratio, r in data["ratios"].items():
                target = target_of("cpu", phase, ratio, arch)
                verdict = "" if target is None else f"{target:7.2f}  " + ("yes" if r["median"] <= target else "NO")
                print(
                    f"{arch:10} {phase:17} {ratio:17} {r['median']:7.3f} [{r['q1']:6.3f}, {r['q3']:6.3f}] "
                    f"{r['min_ratio']:8.3f} {verdict}"
                )
        for line in _extras(arch, res):
            print(line)
        if "profile" in res["forward"]:
            print("\n".join(op_profile.lines(arch, res["forward"]["profile"])))
        write_json(f"{args.out}/speed.json", record)
    print(f"wrote {args.out}/speed.json")
    return record


if __name__ == "__main__":
    main()
