"""Certified removal by one Newton step (Guo et al. 2020, "Certified Data Removal from Machine
Learning Models"), for the logistic regression family only.

The family trains θ to the minimum of the perturbed objective (see families/logistic.py)

    L(θ; D) = mean over D of CE + l2/2·‖θ‖² + b·θ/|D|,    b ~ Normal(0, σ²·I).

Removing records moves the minimum. For a strongly convex L one Newton step on the retained
objective, θ⁻ = θ − H⁻¹·∇L(θ; D'), lands next to the new minimum; the gradient left at θ⁻ is
the removal's error. Guo et al. state the guarantee on the summed objective |D'|·L(θ; D'):
when ‖|D'|·∇L(θ⁻; D')‖ ≤ σ·ε / c with c = √(2·ln(1.5/δ)), the perturbation b hides the error
and θ⁻ is (ε, δ)-indistinguishable from retraining. That norm is `residual_norm` here and
σ·ε/c is `removal_budget`. The caller adds the residuals of successive removals and retrains
once the sum would exceed the budget; each residual is exact at its own step, so the sum is a
conservative bound. Training itself stops short of the exact minimum: `input_residual_norm` is
that shortfall (on forget ∪ retain), which the first removal after a retrain should count too.

The Hessian uses the closed form of softmax regression (families/logistic.py), so it costs one
pass over the data and memory for a (C·(d+1))² matrix rather than one backward pass per
parameter.
"""

from __future__ import annotations

import copy
import math
from typing import Annotated, Any

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass
from torch import nn

from workers.engine.families.logistic import (
    flat_parameters,
    gradient,
    perturbation_vector,
    set_flat,
    softmax_regression_hessian,
)
from workers.engine.training import network_device
from app.unlearning.types import JsonObject
from workers.engine.unlearning.base import (
    STRICT,
    MethodCall,
    MethodHooks,
    MethodOutput,
    dump_config,
    forget_retain_losses,
    report,
)

FAMILY = "logistic_regression"


class CertifiedRemovalUnsupported(ValueError):
    pass


@dataclass(config=STRICT)
class CertifiedNewtonConfig:
    # Newton steps on the retained objective. Guo et al. take one; each further step costs one
    # more Hessian and shrinks the residual roughly quadratically, stretching the budget.
    newton_steps: Annotated[int, Field(ge=1, le=20)] = 1


def removal_budget(family_config: Any) -> float:
    """σ·ε / √(2·ln(1.5/δ)): the summed-objective gradient residual that the loss perturbation
    can hide, accumulated over all removals since the last retrain."""
    sigma = float(family_config.perturbation_sigma)
    if sigma <= 0:
        raise CertifiedRemovalUnsupported(
            "certified removal needs loss perturbation: this model was trained with "
            "perturbation_sigma = 0, so there is no noise to hide the Newton step's residual"
        )
    c = math.sqrt(2 * math.log(1.5 / float(family_config.delta)))
    return sigma * float(family_config.epsilon) / c


class CertifiedNewton(MethodHooks):
    name = "certified_newton"
    # Not retraining, but indistinguishable from it within (ε, δ) while within budget.
    exact = False
    config_class = CertifiedNewtonConfig
    description = "One Newton step on the retained objective; (ε, δ)-certified within budget."
    # The Newton step minimises the objective over every retained record: a sample would move θ
    # towards another model.
    samples_retain = False
    # A repair by gradient steps would leave the certified optimum and void the (ε, δ) bound.
    repairable = False

    def next_state(self, old_state: JsonObject, details: JsonObject) -> JsonObject:
        """The residual spent since the last retrain, summed over removals, and the budget. The
        first removal also pays for the training run's own distance from the optimum."""
        spent = _optional_number(old_state, "residual_spent")
        spent = _number(details, "input_residual_norm") if spent is None else spent
        return {**old_state, "residual_spent": spent + _number(details, "residual_norm"),
                "budget": _number(details, "budget")}

    def blocking_reasons(self, state: JsonObject) -> list[str]:
        spent, budget = state.get("residual_spent", 0.0), state.get("budget", 0.0)
        if not isinstance(spent, (int, float)) or not isinstance(budget, (int, float)):
            raise TypeError(f"certified removal state is not numeric: {spent!r}, {budget!r}")
        if spent > budget:
            return [f"certified removal budget exhausted ({spent:.4g} > {budget:.4g})"]
        return []

    def run(self, call: MethodCall[CertifiedNewtonConfig]) -> MethodOutput:
        """`call.seed` must be the seed the network was trained with: it regenerates b. The retain
        set must hold every retained record, not a sample: the step minimises the objective over
        exactly these records, and a sample would move θ towards another model."""
        config = call.config or CertifiedNewtonConfig()
        family, network, family_config = call.family, call.network, call.family_config
        if getattr(family, "name", None) != FAMILY:
            raise CertifiedRemovalUnsupported(
                f"certified_newton supports only the {FAMILY} family, not "
                f"{getattr(family, 'name', type(family).__name__)!r}: its guarantee needs a "
                f"strongly convex loss"
            )
        if not isinstance(network, nn.Linear):
            raise CertifiedRemovalUnsupported(
                f"certified_newton expects the {FAMILY} network (one nn.Linear), "
                f"got {type(network).__name__}"
            )
        budget = removal_budget(family_config)
        if family_config.l2 <= 0:
            raise CertifiedRemovalUnsupported(
                "certified removal needs l2 > 0: without it the objective is not strongly "
                "convex and the Newton step is undefined"
            )
        data = call.data.to(network_device(network))
        updated = copy.deepcopy(network).eval()
        perturbation = perturbation_vector(updated, family_config, call.seed)
        full_x = torch.cat([data.forget_x, data.retain_x])
        full_y = torch.cat([data.forget_y, data.retain_y])
        n_all, n_kept = full_x.shape[0], data.n_retain
        # Residual of the incoming θ on the data it claims to fit: a training (or earlier
        # removal) error that the certificate must also cover.
        input_residual = n_all * gradient(updated, family_config, full_x, full_y, perturbation).norm()

        step_norms: list[float] = []
        for step in range(config.newton_steps):
            report(call.progress, step / config.newton_steps, "hessian")
            theta = flat_parameters(updated).detach().double()
            grad = gradient(updated, family_config, data.retain_x, data.retain_y, perturbation)
            hessian = softmax_regression_hessian(
                updated.weight.detach().double(),
                updated.bias.detach().double(),
                data.retain_x.double(),
                float(family_config.l2),
            )
            newton_step = torch.linalg.solve(hessian, grad)
            set_flat(updated, theta - newton_step)
            step_norms.append(float(newton_step.norm()))

        residual = n_kept * gradient(
            updated, family_config, data.retain_x, data.retain_y, perturbation
        ).norm()
        report(call.progress, 1.0, "residual")
        return MethodOutput(
            network=updated,
            details={
                "method": self.name,
                "config": dump_config(config),
                "steps": config.newton_steps,
                "n_removed": data.n_forget,
                "n_retained": n_kept,
                "step_norms": step_norms,
                "residual_norm": float(residual),
                "input_residual_norm": float(input_residual),
                "budget": budget,
                # For this removal alone; the caller compares the running sum.
                "within_budget": bool(residual <= budget),
                "sigma": float(family_config.perturbation_sigma),
                "epsilon": float(family_config.epsilon),
                "delta": float(family_config.delta),
                "before": forget_retain_losses(network, data),
                "after": forget_retain_losses(updated, data),
            },
        )


def _optional_number(values: JsonObject, key: str) -> float | None:
    return None if values.get(key) is None else _number(values, key)


def _number(values: JsonObject, key: str) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{key} is not a number: {value!r}")
    return float(value)
