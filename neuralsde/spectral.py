"""Extreme eigenvalues of Jacobian operators, from Jacobian-vector products alone.

No Jacobian is ever formed: the local operators of a map ``f`` at a batch of points are
applied with reverse-mode products (``J^T u``) and with the double-backward trick for
forward products (``J v`` is the gradient of ``<J^T p, v>`` with respect to ``p``), both
reusing one recorded graph of ``f``. The maps must act on each example of the batch
independently (eval mode: BatchNorm with running statistics), which every map of the
library's models does; the operators are then block-diagonal over the batch and one
Lanczos iteration serves every example at once.

Lanczos (with full reorthogonalisation) rather than power iteration: its largest Ritz
value converges to the largest eigenvalue far faster when the top of the spectrum is
clustered, and the residual of the top Ritz pair says when it has converged. Like power
iteration it approaches the largest eigenvalue from below.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["JacobianOperator", "jacobian_norm", "lanczos_top", "log_norm"]


class JacobianOperator:
    """``v -> J v`` and ``u -> J^T u`` for the Jacobian of ``f`` at ``x``, per example.

    Args:
        f: a map acting on each example of a batch independently.
        x: the points, ``(B, ...)``.
    """

    def __init__(self, f: Callable[[Tensor], Tensor], x: Tensor):
        with torch.enable_grad():
            self.x = x.detach().clone().requires_grad_(True)
            self.y = f(self.x)
            self.probe = torch.zeros_like(self.y, requires_grad=True)
            (self._vjp_graph,) = torch.autograd.grad(self.y, self.x, self.probe, create_graph=True)

    def jvp(self, v: Tensor) -> Tensor:
        """``J v``, shape of ``f(x)``."""
        (out,) = torch.autograd.grad(self._vjp_graph, self.probe, v, retain_graph=True)
        return out

    def vjp(self, u: Tensor) -> Tensor:
        """``J^T u``, shape of ``x``."""
        (out,) = torch.autograd.grad(self.y, self.x, u, retain_graph=True)
        return out

    def gram(self, v: Tensor) -> Tensor:
        """``J^T J v``."""
        return self.vjp(self.jvp(v))

    def symmetric(self, v: Tensor) -> Tensor:
        """``(J + J^T) v / 2`` (a square Jacobian only)."""
        return (self.jvp(v) + self.vjp(v)) / 2


def lanczos_top(
    op: Callable[[Tensor], Tensor],
    start: Tensor,
    *,
    iters: int = 40,
    tol: float = 1e-7,
) -> tuple[Tensor, Tensor]:
    """Largest eigenvalue of a symmetric operator, per example, by Lanczos.

    Args:
        op: a symmetric linear map acting on each example of ``(B, ...)`` independently.
        start: the starting vectors, ``(B, ...)`` (random: a vector orthogonal to the top
            eigenvector is never one).
        iters: the most Lanczos steps (the Krylov space's dimension), >= 1; the basis
            is allocated as the steps are taken. Memory: one basis vector per step,
            ``B * start[0].numel() * itemsize`` bytes (1 MiB for one float32 state of
            64 x 64 x 64), the basis growing by doubling. An ``iters`` whose whole basis
            (at most as many steps as a state has values) would need more than half the
            memory available is capped at the steps that fit, with a warning.
        tol: stop once the residual of every example's top Ritz pair is at most ``tol``
            times the operator's largest Ritz value in magnitude.

    Returns:
        ``(value, residual)``, each ``(B,)`` float64: the largest Ritz value and the norm
        of its residual ``||A y - value y||`` (an eigenvalue lies within it of the value).

    Raises:
        ValueError: for ``iters`` that is not an integer >= 1.
    """
    if int(iters) != iters or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters}")
    batch, shape = start.shape[0], start.shape
    n = start[0].numel()
    iters = min(int(iters), n)
    iters = _steps_that_fit(iters, batch * n * start.element_size(), start.device)
    # The basis grows as the iterations run (doubling): memory follows the steps taken,
    # not the most that ``iters`` allows.
    basis = start.new_zeros((batch, min(iters, 8), n))
    q = start.reshape(batch, -1)
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-30)
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    gen = torch.Generator().manual_seed(0)
    for j in range(iters):
        if j == basis.shape[1]:
            grown = start.new_zeros((batch, min(2 * j, iters), n))
            grown[:, :j] = basis
            basis = grown
        basis[:, j] = q
        w = op(q.view(shape)).reshape(batch, -1)
        alphas.append((w * q).sum(1))
        done = basis[:, : j + 1]
        for _ in range(2):  # classical Gram-Schmidt twice: orthogonal to round-off
            w = w - torch.einsum("bk,bkn->bn", torch.einsum("bkn,bn->bk", done, w), done)
        beta = w.norm(dim=1)
        value, residual = _top_ritz(alphas, betas, beta)
        scale = torch.stack(alphas).double().abs().amax(0).clamp_min(1e-300)
        if j + 1 == iters or bool((residual <= tol * torch.maximum(value.abs(), scale)).all()):
            break
        # An invariant subspace (beta ~ 0): go on from a fresh direction orthogonal to it.
        stuck = beta <= 1e-10 * scale.to(beta.dtype)
        if bool(stuck.any()):
            fresh = torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
            for _ in range(2):
                fresh = fresh - torch.einsum("bk,bkn->bn", torch.einsum("bkn,bn->bk", done, fresh), done)
            w = torch.where(stuck[:, None], fresh, w)
            beta = torch.where(stuck, torch.zeros_like(beta), beta)
        betas.append(beta)
        q = w / w.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return value, residual


def available_memory(device: torch.device) -> int:
    """Bytes of memory available to new tensors on ``device`` (the host's available memory for a CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _steps_that_fit(steps: int, per_step: int, device: torch.device) -> int:
    """``steps``, or fewer where their basis would take more than half the memory available (with a warning)."""
    fit = max(available_memory(device) // 2 // per_step, 1)
    if steps <= fit:
        return steps
    warnings.warn(
        f"lanczos_top: iters={steps} would need a basis of {steps * per_step / 2**30:.1f} GiB "
        f"({per_step / 2**20:.2f} MiB a step); capped at {fit} steps, the most that fit in half the memory available",
        stacklevel=3,
    )
    return int(fit)


def _top_ritz(alphas: list[Tensor], betas: list[Tensor], last_beta: Tensor) -> tuple[Tensor, Tensor]:
    """Largest eigenvalue of the Lanczos tridiagonal and the residual of its Ritz pair."""
    a = torch.stack(alphas, 1).double()
    t = torch.diag_embed(a)
    if betas:
        b = torch.stack(betas, 1).double()
        t = t + torch.diag_embed(b, 1) + torch.diag_embed(b, -1)
    evals, evecs = torch.linalg.eigh(t)
    return evals[:, -1], (last_beta.double() * evecs[:, -1, -1]).abs()


def _start(x: Tensor, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device=x.device, dtype=x.dtype)


def jacobian_norm(
    f: Callable[[Tensor], Tensor], x: Tensor, *, iters: int = 40, tol: float = 1e-7, seed: int = 0
) -> Tensor:
    """``||J_f(x)||_2`` per example: the largest singular value, by Lanczos on ``J^T J``.

    Args:
        f: a map acting on each example independently.
        x: the points, ``(B, ...)``.
        iters: the most Lanczos steps.
        tol: relative convergence tolerance on the largest eigenvalue of ``J^T J``.
        seed: seed of the starting vectors.

    Returns:
        ``(B,)`` float64 spectral norms (from below, to ``tol``).
    """
    jac = JacobianOperator(f, x)
    value, _ = lanczos_top(jac.gram, _start(x, seed), iters=iters, tol=tol)
    return value.clamp_min(0).sqrt()


def log_norm(f: Callable[[Tensor], Tensor], x: Tensor, *, iters: int = 40, tol: float = 1e-7, seed: int = 0) -> Tensor:
    """The logarithmic norm ``mu_2(J_f(x))``: the largest eigenvalue of ``(J + J^T) / 2``.

    ``mu_2(A) = lim_{e -> 0+} (||I + e A|| - 1) / e``; it may be negative. For the flow of
    ``dX/dt = G(X)``, ``||dX(T)/dX(0)|| <= exp(int mu_2(J_G(X(t))) dt)``.

    Args:
        f: a map from and to the same shape, acting on each example independently.
        x: the points, ``(B, ...)``.
        iters: the most Lanczos steps.
        tol: relative convergence tolerance.
        seed: seed of the starting vectors.

    Returns:
        ``(B,)`` float64 logarithmic norms (from below, to ``tol``).
    """
    jac = JacobianOperator(f, x)
    if jac.y.shape != x.shape:
        shapes = f"{tuple(x.shape)} to {tuple(jac.y.shape)}"
        raise ValueError(f"the logarithmic norm needs a square Jacobian: f maps {shapes}")
    value, _ = lanczos_top(jac.symmetric, _start(x, seed), iters=iters, tol=tol)
    return value
