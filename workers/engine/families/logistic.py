"""Multinomial logistic regression, trained to the optimum of a perturbed, L2-regularised loss.

The objective over n records is

    mean(cross-entropy) + l2/2·‖θ‖² + b·θ/n,      θ = (weight, bias) flattened,

where b ~ Normal(0, σ²·I) is the loss perturbation of certified removal (Guo et al. 2020). The
perturbation hides the small residual that a Newton removal step leaves behind, and the removal
bound assumes θ sits at the objective's minimum, hence full-batch L-BFGS rather than SGD.
b is regenerated from the model's seed by `perturbation_vector`, so it is never stored.
"""

from __future__ import annotations

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

    def predict_proba(self, network: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return softmax_proba(network, features)

    def loss_per_example(
        self, network: nn.Module, features: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        return cross_entropy_per_example(network, features, labels)


LogisticRegressionFamily = LogisticRegression()
