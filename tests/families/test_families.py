import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from app.families.registry import get_family
from tests.factories import family_and_config
from workers.engine import training
from workers.engine.families.base import ModelFamily, Shape
from workers.engine.families.logistic import (
    flat_parameters,
    objective,
    perturbation_vector,
)

CPU = torch.device("cpu")
DIGITS_SHAPE = Shape(n_features=64, n_classes=10)


@pytest.fixture(scope="module")
def digits():
    features, labels = load_digits(return_X_y=True)
    # The file is grouped by writer; a fixed shuffle puts every writer on both sides.
    order = np.random.default_rng(0).permutation(len(labels))
    features = torch.tensor(features[order] / 16.0, dtype=torch.float32)
    labels = torch.tensor(labels[order], dtype=torch.int64)
    return features[:1300], labels[:1300], features[1300:], labels[1300:]


def train_and_score(name, digits, **params):
    family, config = family_and_config(name, **params)
    train_x, train_y, test_x, test_y = digits
    state = training.train_single(family, config, DIGITS_SHAPE, train_x, train_y, seed=3, device=CPU)
    network = training.new_network(family, config, DIGITS_SHAPE, seed=0)
    network.load_state_dict(state)
    return family, config, network, training.evaluate(family, network, test_x, test_y)


@pytest.mark.parametrize("name", ["logistic_regression", "mlp_classifier", "cnn_classifier"])
def test_registered_implementations_satisfy_the_protocol(name):
    family = get_family(name).load_implementation()
    assert isinstance(family, ModelFamily)
    assert family.name == name


def test_logistic_regression_learns_digits_and_reaches_the_optimum(digits):
    family, config, network, scores = train_and_score("logistic_regression", digits, epochs=20)
    assert scores["accuracy"] > 0.93
    # Certified removal assumes θ minimises the perturbed objective: its gradient must vanish.
    train_x, train_y, _, _ = digits
    loss = objective(network, config, train_x, train_y, perturbation_vector(network, config, 3))
    gradient = torch.autograd.grad(loss, list(network.parameters()))
    assert torch.cat([g.reshape(-1) for g in gradient]).norm() < 1e-3


def test_logistic_perturbation_moves_the_optimum(digits):
    train_x, train_y, _, _ = digits
    weights = []
    for sigma in (0.0, 1.0):
        family, config = family_and_config("logistic_regression", epochs=10, perturbation_sigma=sigma)
        state = training.train_single(family, config, DIGITS_SHAPE, train_x, train_y, seed=3, device=CPU)
        weights.append(state["weight"])
    assert not torch.equal(weights[0], weights[1])


def test_perturbation_vector_is_regenerated_from_the_seed():
    family, config = family_and_config("logistic_regression", perturbation_sigma=2.0)
    network = family.build_network(config, Shape(n_features=300, n_classes=4))
    first = perturbation_vector(network, config, seed=11)
    assert first.shape == flat_parameters(network).shape == (300 * 4 + 4,)
    assert torch.equal(first, perturbation_vector(network, config, seed=11))
    assert not torch.equal(first, perturbation_vector(network, config, seed=12))
    assert 1.8 < first.std().item() < 2.2

    _, unperturbed = family_and_config("logistic_regression", perturbation_sigma=0.0)
    assert not perturbation_vector(network, unperturbed, seed=11).any()


def test_mlp_learns_digits(digits):
    *_, scores = train_and_score(
        "mlp_classifier", digits, hidden=[64], epochs=8, learning_rate=3e-3, batch_size=64
    )
    assert scores["accuracy"] > 0.85


def test_cnn_learns_digits(digits):
    *_, scores = train_and_score(
        "cnn_classifier", digits, image_shape=[1, 8, 8], channels=[8, 16], epochs=8,
        learning_rate=3e-3, batch_size=64,
    )
    assert scores["accuracy"] > 0.85


def test_cnn_rejects_an_image_shape_that_does_not_match_the_features():
    family, config = family_and_config("cnn_classifier", image_shape=[1, 8, 8])
    with pytest.raises(ValueError, match="64 pixels.*63 feature columns"):
        family.build_network(config, Shape(n_features=63, n_classes=10))


def test_cnn_skips_pooling_once_the_image_is_too_small():
    family, config = family_and_config("cnn_classifier", image_shape=[3, 2, 5], channels=[4, 4, 4])
    network = family.build_network(config, Shape(n_features=30, n_classes=3))
    assert sum(isinstance(layer, torch.nn.MaxPool2d) for layer in network) == 1
    proba = family.predict_proba(network, torch.rand(7, 30))
    assert proba.shape == (7, 3)


def test_mlp_with_dropout_is_deterministic_and_leaves_the_global_rng_alone(digits):
    family, config = family_and_config("mlp_classifier", hidden=[32, 16], dropout=0.3, epochs=2)
    train_x, train_y, _, _ = digits
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    states = [
        training.train_single(family, config, DIGITS_SHAPE, train_x, train_y, seed=5, device=CPU)
        for _ in range(2)
    ]
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])


@pytest.mark.parametrize("name", ["logistic_regression", "mlp_classifier", "cnn_classifier"])
def test_probabilities_and_losses_agree(name):
    family, config = family_and_config(name)
    network = training.new_network(family, config, DIGITS_SHAPE, seed=0)
    network.train()
    features, labels = torch.rand(9, 64), torch.randint(0, 10, (9,))
    proba = family.predict_proba(network, features)
    assert network.training, "predicting must not leave the network in eval mode"
    assert torch.allclose(proba.sum(dim=1), torch.ones(9))
    losses = family.loss_per_example(network, features, labels)
    assert losses.shape == (9,)
    assert torch.allclose(losses, -proba[torch.arange(9), labels].log(), atol=1e-5)
