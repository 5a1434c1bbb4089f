"""Multinomial logistic regression, trained to the optimum of a perturbed, L2-regularised loss.

The objective over n records is

    mean(cross-entropy) + l2/2·‖θ‖² + b·θ/n,      θ = (weight, bias) flattened,

where b ~ Normal(0, σ²·I) is the loss perturbation of certified removal (Guo et al. 2020). The
perturbation hides the small residual that a Newton removal step leaves behind, and the removal
bound assumes θ sits at the objective's minimum, hence full-batch L-BFGS rather than SGD.
b is regenerated from the model's seed by `perturbation_vector`, so it is never stored.

L-BFGS in float32 stops short of the minimum by more than certified removal can hide on large
data (its gradient residual grows with n), and where it stops depends on the CPU's float
kernels. Training therefore ends with Newton steps in float64 (`close_to_minimum`): from
L-BFGS's point they converge quadratically, so θ then sits at the minimum up to float32
rounding, on any machine.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from workers.engine.families.base import Shape
from workers.engine.training import (
    cross_entropy_per_example,
    derive_seed,
    network_device,
    softmax_proba,
)

# Inner iterations per L-BFGS step; config.epochs counts the outer steps.
LBFGS_ITERATIONS_PER_STEP = 20
LBFGS_HISTORY = 20
# Float64 Newton steps after L-BFGS; the second usually changes nothing that float32 can hold.
CLOSING_NEWTON_STEPS = 2
# Rows per chunk of the Hessian pass: bounds its [rows, C·(d+1)] intermediate.
HESSIAN_CHUNK_ROWS = 8192


def flat_parameters(network: nn.Module) -> torch.Tensor:
    """θ as one vector, in `network.parameters()` order (weight, then bias)."""
    return torch.cat([parameter.reshape(-1) for parameter in network.parameters()])


def perturbation_vector(network: nn.Module, config: Any, seed: int) -> torch.Tensor:
    """The loss perturbation b used when `network` was trained with `seed` (zeros if σ = 0)."""
    size = sum(parameter.numel() for parameter in network.parameters())
    device = network_device(network)
    if config.perturbation_sigma == 0:
        return torch.zeros(size, device=device)
    # Its own stream: the initial weights were drawn from torch.manual_seed(seed).
    generator = torch.Generator().manual_seed(derive_seed(seed, "perturbation"))
    noise = torch.normal(0.0, float(config.perturbation_sigma), (size,), generator=generator)
    return noise.to(device)


def objective(
    network: nn.Module,
    config: Any,
    features: torch.Tensor,
    labels: torch.Tensor,
    perturbation: torch.Tensor,
) -> torch.Tensor:
    """The training objective on these records, differentiable in the network's parameters.

    Removal methods use it for the gradient and Hessian at θ on the remaining records.
    """
    theta = flat_parameters(network)
    n = features.shape[0]
    data_loss = F.cross_entropy(network(features), labels)
    return data_loss + config.l2 / 2 * theta.pow(2).sum() + perturbation.dot(theta) / n


def gradient(
    network: nn.Module, config: Any, x: torch.Tensor, y: torch.Tensor, perturbation: torch.Tensor
) -> torch.Tensor:
    """∇ of the objective at the network's current θ, in float64.

    Evaluated on a float64 copy of the (float32) weights as released, so it is the gradient of
    the model actually served, free of float32 rounding in the reduction itself.
    """
    exact = copy.deepcopy(network).double()
    for parameter in exact.parameters():
        parameter.requires_grad_(True)
    value = objective(exact, config, x.double(), y, perturbation.double())
    grads = torch.autograd.grad(value, list(exact.parameters()))
    return torch.cat([g.reshape(-1) for g in grads])


def softmax_regression_hessian(
    weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, l2: float
) -> torch.Tensor:
    """Hessian of mean CE + l2/2·‖θ‖² over θ = (weight [C, d] row-major, bias [C]).

    Per record with x̃ = (x, 1) and p = softmax: (diag p − p·pᵀ) ⊗ x̃·x̃ᵀ. Summed over records,
    the p·pᵀ part is ZᵀZ with Z's row i = (p_i1·x̃_i, …, p_iC·x̃_i), one matrix product; the
    diagonal blocks add X̃ᵀ·diag(p_c)·X̃. The linear perturbation term has no curvature.
    """
    n, d = x.shape
    n_classes = weight.shape[0]
    width = d + 1
    augmented = torch.cat([weight, bias[:, None]], dim=1)  # [C, d+1]
    size = n_classes * width
    hessian = torch.zeros(size, size, dtype=x.dtype, device=x.device)  # (class, column) order
    blocks = torch.zeros(n_classes, width, width, dtype=x.dtype, device=x.device)
    for features in x.split(HESSIAN_CHUNK_ROWS):
        rows = torch.cat([features, torch.ones(features.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)
        p = torch.softmax(rows @ augmented.T, dim=1)  # [m, C]
        z = (p[:, :, None] * rows[:, None, :]).reshape(rows.shape[0], size)
        hessian.addmm_(z.T, z, alpha=-1.0)
        blocks += torch.einsum("mcj,mk->cjk", z.view(-1, n_classes, width), rows)
    for c in range(n_classes):
        hessian[c * width : (c + 1) * width, c * width : (c + 1) * width] += blocks[c]
    hessian /= n
    # From (class, column) with the bias as column d, to weight-then-bias order.
    index = torch.arange(size, device=x.device).view(n_classes, width)
    order = torch.cat([index[:, :d].reshape(-1), index[:, d]])
    hessian = hessian[order][:, order]
    return hessian + l2 * torch.eye(size, dtype=x.dtype, device=x.device)


def set_flat(network: nn.Module, theta: torch.Tensor) -> None:
    """Write θ (in `flat_parameters` order) into the network, in its own dtype."""
    with torch.no_grad():
        start = 0
        for parameter in network.parameters():
            count = parameter.numel()
            parameter.copy_(theta[start : start + count].view_as(parameter).to(parameter.dtype))
            start += count


def close_to_minimum(
    network: nn.Module, config: Any, features: torch.Tensor, labels: torch.Tensor,
    perturbation: torch.Tensor, steps: int = CLOSING_NEWTON_STEPS,
) -> None:
    """Newton steps in float64 from the network's θ towards the objective's minimum (strongly
    convex only when l2 > 0; without it the Hessian can be singular and nothing is done)."""
    if config.l2 <= 0:
        return
    x = features.double()
    for _ in range(steps):
        theta = flat_parameters(network).detach().double()
        grad = gradient(network, config, features, labels, perturbation)
        hessian = softmax_regression_hessian(
            network.weight.detach().double(), network.bias.detach().double(), x, float(config.l2)
        )
        set_flat(network, theta - torch.linalg.solve(hessian, grad))


class LogisticRegression:
    name = "logistic_regression"

    def build_network(self, config: Any, shape: Shape) -> nn.Module:
        return nn.Linear(shape.n_features, shape.n_classes)

    def train(
        self,
        network: nn.Module,
        config: Any,
        features: torch.Tensor,
        labels: torch.Tensor,
        *,
        seed: int,
        epochs: int | None = None,
    ) -> None:
        device = network_device(network)
        features, labels = features.to(device), labels.to(device)
        if features.shape[0] == 0:
            return
        perturbation = perturbation_vector(network, config, seed)
        # Full batch, so batch_size does not apply; learning_rate is the first trial step of
        # each line search, which then finds a step satisfying the strong Wolfe conditions.
        optimizer = torch.optim.LBFGS(
            network.parameters(),
            lr=config.learning_rate,
            max_iter=LBFGS_ITERATIONS_PER_STEP,
            history_size=LBFGS_HISTORY,
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = objective(network, config, features, labels, perturbation)
            loss.backward()
            return loss

        network.train()
        for _ in range(config.epochs if epochs is None else epochs):
            optimizer.step(closure)
        network.eval()
        close_to_minimum(network, config, features, labels, perturbation)

    def predict_proba(self, network: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return softmax_proba(network, features)

    def loss_per_example(
        self, network: nn.Module, features: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        return cross_entropy_per_example(network, features, labels)


LogisticRegressionFamily = LogisticRegression()
