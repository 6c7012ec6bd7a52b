"""The main job: ``python -m benchmarks``.

Converts a torchvision ResNet into its ODE and SDE twins, checks that the ODE twin
reproduces the torchvision logits with one Euler step per block, and runs the ODE with a
finer solver and the SDE with the noise on, saying what each did.
"""

from __future__ import annotations

import argparse

import torch
import torchvision

from neuralsde import ODEResNet, SDEResNet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    tv = torchvision.models.get_model(args.arch, num_classes=10).eval()
    x = torch.randn(2, 3, args.size, args.size)
    with torch.no_grad():
        ref = tv(x)
        ode = ODEResNet.from_torchvision(tv)
        gap = (ode(x) - ref).abs().max().item()
        print(f"{args.arch}: ODE twin (euler, 1 step/block) vs torchvision: max |logit difference| = {gap:.2e}")
        ode.set_solver(method="rk4", steps_per_block=4)
        fine = ode(x)
        nfe = sum(s.nfe for s in ode.solver_stats().values())
        gap = (fine - ref).abs().max().item()
        print(f"ODE twin with rk4, 4 steps/block: {nfe} drift evaluations, max |logit change| = {gap:.3f}")
        sde = SDEResNet.from_torchvision(tv, sigma=0.5).set_noise(eval_samples=8)
        mc = sde(x)
        spread = (mc - ref).abs().max().item()
        print(f"SDE twin (normalized noise 0.5, Euler–Maruyama), mean of 8 paths: max |logit change| = {spread:.3f}")


if __name__ == "__main__":
    main()
