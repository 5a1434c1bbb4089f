"""Hyper-parameters of the built-in families (torch-free; implementations live in workers)."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from app.families import shapes
from app.families.registry import FamilySpec

_STRICT = ConfigDict(extra="forbid")

PositiveInt = Annotated[int, Field(ge=1, le=100_000)]
LearningRate = Annotated[float, Field(gt=0, le=10)]


@dataclass(config=_STRICT)
class LogisticRegressionConfig:
    # Passes over the training records (per slice under SISA).
    epochs: PositiveInt = 30
    learning_rate: LearningRate = 0.1
    batch_size: PositiveInt = 256
    # L2 strength λ of the objective  mean(loss) + λ/2·‖θ‖². Must be > 0 for certified removal:
    # the Newton update's error bound is proportional to 1/λ.
    l2: Annotated[float, Field(ge=0, le=100)] = 1e-3
    # Standard deviation σ of the loss perturbation b·θ/n (Guo et al. 2020); 0 disables it and
    # with it `certified_newton`.
    perturbation_sigma: Annotated[float, Field(ge=0, le=1e6)] = 1.0
    # Privacy parameters of certified removal; the error budget is derived from them.
    epsilon: Annotated[float, Field(gt=0, le=100)] = 1.0
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-4


@dataclass(config=_STRICT)
class MLPConfig:
    # Width of each hidden layer, in order.
    hidden: Annotated[list[Annotated[int, Field(ge=1, le=8192)]], Field(min_length=1, max_length=8)] = (
        Field(default_factory=lambda: [128])
    )
    epochs: PositiveInt = 20
    learning_rate: LearningRate = 1e-3
    batch_size: PositiveInt = 128
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0


@dataclass(config=_STRICT)
class CNNConfig:
    # (channels, height, width) of each image; the feature columns are its pixels, row-major.
    image_shape: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=3, max_length=3)] = (
        Field(default_factory=lambda: [1, 8, 8])
    )
    # Output channels of each 3×3 convolution block (conv → ReLU → 2×2 max-pool when it fits).
    channels: Annotated[list[Annotated[int, Field(ge=1, le=1024)]], Field(min_length=1, max_length=6)] = (
        Field(default_factory=lambda: [16, 32])
    )
    epochs: PositiveInt = 15
    learning_rate: LearningRate = 1e-3
    batch_size: PositiveInt = 128
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0


LOGISTIC_REGRESSION = FamilySpec(
    name="logistic_regression",
    config_class=LogisticRegressionConfig,
    implementation="workers.engine.families.logistic:LogisticRegressionFamily",
    description="Multinomial logistic regression with L2; supports certified Newton removal.",
    convex=True,
    tensor_shapes=shapes.logistic,
)
MLP_CLASSIFIER = FamilySpec(
    name="mlp_classifier",
    config_class=MLPConfig,
    implementation="workers.engine.families.mlp:MLPFamily",
    description="Fully connected classifier with ReLU hidden layers.",
    tensor_shapes=shapes.mlp,
)
CNN_CLASSIFIER = FamilySpec(
    name="cnn_classifier",
    config_class=CNNConfig,
    implementation="workers.engine.families.cnn:CNNFamily",
    description="Small convolutional classifier over images given as flat pixel columns.",
    tensor_shapes=shapes.cnn,
)

BUILTIN_FAMILIES = (LOGISTIC_REGRESSION, MLP_CLASSIFIER, CNN_CLASSIFIER)
