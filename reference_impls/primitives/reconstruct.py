"""Least-squares re-solve of a linear layer: new weights that make a pruned layer reproduce a target output.

After some input channels of a linear layer are removed (a head's slice of o_proj, an MLP channel's column
of down_proj), the remaining columns can be re-fitted so that the layer's output on calibration inputs
stays as close as possible to a target (the dense model's output): W = argmin ||X W^T - Y||_F^2, solved
from the normal equations (X^T X + lambda I) W^T = X^T Y (products in float32, the solve in float64).
`damp` adds lambda = damp * mean(diag(X^T X)) (0 solves the plain problem; a positive value keeps it well
posed when channels are collinear or tokens are few). The ridge pulls W toward zero, or toward `prior` when
one is given: minimising ||X W^T - Y||^2 + lambda ||W - prior||^2 gives (X^T X + lambda I) W^T =
X^T Y + lambda prior^T, which never fits the calibration data worse than `prior` itself (the objective at
the solution is at most its value at `prior`). K-prune's knowledge-preserving weight tuning is this solve
on o_proj and down_proj, with the kept columns of the original weight as the prior.
"""

from __future__ import annotations

import torch


def least_squares_weight(
    x: torch.Tensor, y: torch.Tensor, damp: float = 0.0, prior: torch.Tensor | None = None
) -> torch.Tensor:
    """W (out, in), in x's dtype, minimising ||x W^T - y||^2 + lambda ||W - prior||^2 (prior 0 when None)
    for x (tokens, in), y (tokens, out)."""
    x32 = x.reshape(-1, x.shape[-1]).float()
    y32 = y.reshape(-1, y.shape[-1]).float()
    gram = (x32.T @ x32).double()  # (in, in)
    rhs = (x32.T @ y32).double()  # (in, out)
    if damp > 0:
        lam = damp * float(gram.diagonal().mean().clamp_min(1e-12))
        gram += torch.eye(gram.shape[0], dtype=gram.dtype) * lam
        if prior is not None:
            rhs += lam * prior.detach().double().T
    try:
        solution: torch.Tensor = torch.linalg.solve(gram, rhs)
    except RuntimeError:  # singular: the minimum-norm least-squares solution
        solution = torch.linalg.lstsq(gram, rhs, driver="gelsd").solution
    return solution.T.contiguous().to(x.dtype)


def reconstruction_error(x: torch.Tensor, weight: torch.Tensor, y: torch.Tensor) -> float:
    """||x W^T - y||_F^2 (float64)."""
    x64 = x.reshape(-1, x.shape[-1]).double()
    return float((x64 @ weight.double().T - y.reshape(-1, y.shape[-1]).double()).square().sum())
