"""Speed of the continuous-time models against torchvision, measured side by side.

    python -m benchmarks.speed [--archs resnet18 resnet50] [--size 224] [--batch 4]
                               [--rounds 10] [--device cpu] [--out results]

Ratios (targets in brackets), each formed within one round and summarised over rounds:

* ODEResNet (Euler, one step per block) forward / torchvision forward        [<= 1.05]
* SDEResNet forward, noise on (Euler–Maruyama) / ODEResNet forward           [<= 1.2]
* the same two ratios for forward + backward (train mode, loss = sum of logits)
* drawing the Gaussian increments of one SDE forward, alone / ODEResNet forward
  (no target: the part of the SDE's extra cost that is the device's random number
  generator, e.g. about 4 ns per float32 sample on one CPU core)
* Captum DeepLift on the ODEResNet / DeepLift on its discrete twin            [<= 1.1]
  (``neuralsde.discrete.DiscreteResNet``: the same network without a solver, with a
  distinct ReLU per call site, since DeepLift cannot run on torchvision's own blocks)

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
import sys
import warnings

import torch
import torchvision
from captum.attr import DeepLift
from tqdm import tqdm

from neuralsde import ODEResNet, SDEResNet
from neuralsde.discrete import DiscreteResNet

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


def measure_arch(arch: str, *, size: int, batch: int, rounds: int, device: str, seed: int) -> dict:
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
            runs["gaussians"] = gaussians(noise_draws(sde, x))
        bar = tqdm(total=rounds, desc=f"{arch} {phase}", leave=False, file=sys.stderr)
        results[phase] = paired_ratios(
            runs,
            pairs + [("gaussians", "ode")] * (phase == "forward"),
            rounds=rounds,
            device=device,
            progress=lambda r, bar=bar: bar.update(1),
        )
        bar.close()

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
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")
    record = {
        "benchmark": "speed",
        "config": {k: getattr(args, k) for k in ("archs", "size", "batch", "rounds", "device", "seed")},
        "environment": environment(args.device),
        "results": {},
    }
    print(f"{'arch':10} {'phase':17} {'ratio':17} {'median':>7} {'[q1, q3]':>17} {'min/min':>8} {'target':>7}  ok")
    for arch in args.archs:
        res = measure_arch(
            arch, size=args.size, batch=args.batch, rounds=args.rounds, device=args.device, seed=args.seed
        )
        record["results"][arch] = res
        for phase, data in res.items():
            for ratio, r in data["ratios"].items():
                target = target_of("cpu", phase, ratio)
                verdict = "" if target is None else f"{target:7.2f}  " + ("yes" if r["median"] <= target else "NO")
                print(
                    f"{arch:10} {phase:17} {ratio:17} {r['median']:7.3f} [{r['q1']:6.3f}, {r['q3']:6.3f}] "
                    f"{r['min_ratio']:8.3f} {verdict}"
                )
        write_json(f"{args.out}/speed.json", record)
    print(f"wrote {args.out}/speed.json")
    return record


if __name__ == "__main__":
    main()
