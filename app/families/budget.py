"""Model budgets: what training a family's network costs, estimated from its hyper-parameters
alone (no torch), so that a model over the operator's budget is refused before it is queued.

Three figures, each against its own setting:
- parameters: the exact count, from `FamilySpec.parameter_shapes`;
- training memory: float32 weights; for the weights training updates (all of them, or those
  `FamilySpec.trainable_shapes` names: a LoRA adapter, its base frozen) their gradients and
  AdamW's two moments too; plus the activations one batch keeps for the backward pass
  (`FamilySpec.activations` per example);
- compute: about 6 floating-point operations per parameter per position processed (forward and
  backward), times the positions training processes (`FamilySpec.positions_seen`).

A family that declares none of these callables is budgeted on what it declares; a new family
(image diffusion, a Hugging Face configuration) extends the estimate by declaring them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from app.config import get_settings
from app.families.spec import FamilySpec

BYTES_PER_VALUE = 4  # float32
# A trained weight: its value, its gradient and the optimiser's two moments. A frozen one: its value.
STATE_COPIES = 4
FLOPS_PER_PARAMETER_POSITION = 6


class BudgetExceeded(ValueError):
    """The model is over one of the budgets; the message names the figure and the limit."""


@dataclass(frozen=True)
class Budget:
    max_parameters: int
    max_memory_bytes: int
    max_flops: float

    @classmethod
    def from_settings(cls) -> "Budget":
        settings = get_settings()
        return cls(settings.max_model_parameters, settings.max_training_memory_bytes, settings.max_training_flops)


@dataclass(frozen=True)
class Footprint:
    parameters: int
    memory_bytes: int
    flops: int
    # Of `parameters`, those training updates (the rest are frozen).
    trainable: int | None = None


def parameter_count(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def estimate(spec: FamilySpec, config: Any, n_features: int, n_classes: int, rows: int) -> Footprint:
    """The footprint of training one network of this family on `rows` records."""
    shapes = spec.parameter_shapes(config, n_features, n_classes) if spec.parameter_shapes else {}
    parameters = parameter_count(shapes)
    trainable = parameter_count(spec.trainable_shapes(config, n_features, n_classes)) if spec.trainable_shapes \
        else parameters
    per_example = spec.activations(config, n_features, n_classes) if spec.activations else 0
    batch = int(getattr(config, "batch_size", 1))
    memory = BYTES_PER_VALUE * ((parameters - trainable) + STATE_COPIES * trainable + batch * per_example)
    positions = spec.positions_seen(config, rows) if spec.positions_seen else 0
    # Compute counts every weight as trained: a frozen one still carries the backward pass
    # through it (only its own gradient is skipped), so this errs on the safe side.
    return Footprint(parameters, memory, FLOPS_PER_PARAMETER_POSITION * parameters * positions, trainable)


def check(footprint: Footprint, budget: Budget | None = None) -> None:
    """Raise BudgetExceeded naming the first figure over its limit."""
    budget = budget or Budget.from_settings()
    check_parameters(footprint.parameters, budget)
    if footprint.memory_bytes > budget.max_memory_bytes:
        raise BudgetExceeded(
            f"Training this model would need about {footprint.memory_bytes:,} bytes of memory; the limit is "
            f"{budget.max_memory_bytes:,} (OBLIVIATE_MAX_TRAINING_MEMORY_BYTES). Lower batch_size or the network's size."
        )
    if footprint.flops > budget.max_flops:
        raise BudgetExceeded(
            f"Training this model would take about {footprint.flops:.3g} floating-point operations; the limit is "
            f"{budget.max_flops:.3g} (OBLIVIATE_MAX_TRAINING_FLOPS). Lower the steps or epochs, or the network's size."
        )


def check_parameters(parameters: int, budget: Budget | None = None) -> None:
    budget = budget or Budget.from_settings()
    if parameters > budget.max_parameters:
        raise BudgetExceeded(
            f"This model would have {parameters:,} parameters; the limit is {budget.max_parameters:,} "
            "(OBLIVIATE_MAX_MODEL_PARAMETERS)."
        )
