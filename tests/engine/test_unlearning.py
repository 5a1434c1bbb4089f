"""Approximate and certified unlearning against an exact retrain, and the verification figures.

The data is sklearn's digits with 80 deliberately mislabelled records: 40 are trained on (the
forget set, which an over-fitted network memorises) and 40 are held out under the same kind of
mislabelling (the membership-inference reference). A network that never saw the forget set
gets them wrong and with a high loss; one that memorised them does not.
"""

import json

import numpy as np
import pytest
import torch

from app.families.registry import get_family
from tests.engine.mislabelled import mislabelled_digits
from workers.engine import training
from workers.engine.families.base import Shape
from workers.engine.families.logistic import flat_parameters, objective, perturbation_vector
from workers.engine.unlearning.base import (
    EXACT_METHODS,
    METHODS,
    ForgetRetain,
    MethodCall,
    MethodConfigError,
    UnknownMethodError,
    get_method,
    parse_method_config,
)
from workers.engine.unlearning.certified_newton import (
    CertifiedRemovalUnsupported,
    removal_budget,
    softmax_regression_hessian,
)
from workers.engine.unlearning.verification import (
    accuracy_and_loss,
    mia_auc,
    verify,
)

CPU = torch.device("cpu")
SHAPE = Shape(n_features=64, n_classes=10)
SEED = 1


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return mislabelled_digits(40)


def split(digits):
    return ForgetRetain(*digits["forget"], *digits["retain"])


def train(family_name, params, x, y):
    spec = get_family(family_name)
    family, config = spec.load_implementation(), spec.parse_params(params)
    state = training.train_single(family, config, SHAPE, x, y, seed=SEED, device=CPU)
    network = training.new_network(family, config, SHAPE, seed=SEED)
    network.load_state_dict(state)
    return family, config, network


def figures(family, network, digits):
    found = verify(family, network, digits["forget"], digits["retain"], digits["atypical_holdout"])
    found["clean_holdout"] = accuracy_and_loss(family, network, *digits["holdout"])
    return found


def summary(found):
    return (
        f"forget acc {found['forget']['accuracy']:.3f} loss {found['forget']['loss']:.2f}, "
        f"retain acc {found['retain']['accuracy']:.3f}, "
        f"holdout acc {found['clean_holdout']['accuracy']:.3f}, mia {found['mia_auc']:.3f}"
    )


@pytest.fixture(scope="module")
def mlp_runs(digits):
    params = {"hidden": [128], "epochs": 100, "learning_rate": 3e-3}
    forget_x, forget_y = digits["forget"]
    retain_x, retain_y = digits["retain"]
    family, config, original = train(
        "mlp_classifier", params, torch.cat([forget_x, retain_x]), torch.cat([forget_y, retain_y])
    )
    _, _, reference = train("mlp_classifier", params, retain_x, retain_y)
    return family, config, original, reference


# Overrides that give each method enough steps on this small retain set (10 batches a pass).
APPROXIMATE = {
    "finetune": {"epochs": 8},
    "neggrad_plus": {"epochs": 5},
    "scrub": {"epochs": 8, "max_epochs": 4},
    "salun": {"epochs": 8, "learning_rate": 0.05, "optimizer": "sgd", "forget_weight": 0.25},
}


def test_original_remembers_what_the_retrain_never_saw(digits, mlp_runs):
    family, _, original, reference = mlp_runs
    before, retrained = figures(family, original, digits), figures(family, reference, digits)
    print(f"\noriginal: {summary(before)}\nretrain:  {summary(retrained)}")
    assert before["forget"]["accuracy"] >= 0.3 and retrained["forget"]["accuracy"] <= 0.05
    assert before["mia_auc"] >= 0.95 and retrained["mia_auc"] <= 0.6


@pytest.mark.parametrize("name", sorted(APPROXIMATE))
def test_approximate_method_moves_forget_figures_towards_retrain(digits, mlp_runs, name):
    family, config, original, reference = mlp_runs
    weights_before = {k: v.clone() for k, v in original.state_dict().items()}
    calls = []
    method = get_method(name)
    result = method.run(MethodCall(
        family, original, config, split(digits), parse_method_config(name, APPROXIMATE[name]),
        seed=7, progress=lambda fraction, step: calls.append(fraction),
    ))
    before = figures(family, original, digits)
    after = figures(family, result.network, digits)
    retrained = figures(family, reference, digits)
    print(f"\n{name}: {summary(after)}")

    assert after["forget"]["accuracy"] <= before["forget"]["accuracy"] - 0.15
    assert after["forget"]["loss"] >= before["forget"]["loss"] + 0.5
    assert abs(after["mia_auc"] - retrained["mia_auc"]) <= abs(
        before["mia_auc"] - retrained["mia_auc"]
    ) - 0.05
    assert after["retain"]["accuracy"] >= 0.95
    assert after["clean_holdout"]["accuracy"] >= before["clean_holdout"]["accuracy"] - 0.04

    assert not method.exact
    assert calls and calls[-1] == 1.0 and calls == sorted(calls)
    assert result.details["steps"] > 0
    json.dumps(result.details)
    for key, value in original.state_dict().items():
        assert torch.equal(value, weights_before[key]), "run must not modify its input network"


def test_methods_are_reproducible_under_a_seed(digits, mlp_runs):
    family, config, original, _ = mlp_runs
    method = get_method("neggrad_plus")
    first = method.run(MethodCall(family, original, config, split(digits), None, seed=3)).network
    second = method.run(MethodCall(family, original, config, split(digits), None, seed=3)).network
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def logistic_runs(digits):
    params = {"l2": 0.01}
    forget_x, forget_y = digits["forget"]
    retain_x, retain_y = digits["retain"]
    family, config, original = train(
        "logistic_regression", params,
        torch.cat([forget_x, retain_x]), torch.cat([forget_y, retain_y]),
    )
    _, _, reference = train("logistic_regression", params, retain_x, retain_y)
    return family, config, original, reference


def relative_distance(network, reference):
    target = flat_parameters(reference).detach().double()
    return float((flat_parameters(network).detach().double() - target).norm() / target.norm())


def test_certified_newton_lands_near_the_retrained_optimum(digits, logistic_runs):
    family, config, original, reference = logistic_runs
    result = get_method("certified_newton").run(MethodCall(family, original, config, split(digits), None, seed=SEED))
    before, after = figures(family, original, digits), figures(family, result.network, digits)
    retrained = figures(family, reference, digits)
    print(f"\noriginal: {summary(before)}\nnewton:   {summary(after)}\nretrain:  {summary(retrained)}")
    print({k: v for k, v in result.details.items() if k not in ("before", "after")})

    assert relative_distance(result.network, reference) <= 0.1 * relative_distance(original, reference)
    # A linear model cannot fit the mislabelled records, so their loss is what moves.
    gap_before = abs(before["forget"]["loss"] - retrained["forget"]["loss"])
    assert abs(after["forget"]["loss"] - retrained["forget"]["loss"]) <= 0.2 * gap_before
    assert abs(after["mia_auc"] - retrained["mia_auc"]) < abs(before["mia_auc"] - retrained["mia_auc"])
    assert after["clean_holdout"]["accuracy"] >= before["clean_holdout"]["accuracy"] - 0.01
    assert result.details["budget"] == pytest.approx(removal_budget(config))
    json.dumps(result.details)


def test_certified_newton_single_removal_is_within_budget(digits, logistic_runs):
    family, config, original, _ = logistic_runs
    forget_x, forget_y = digits["forget"]
    retain_x, retain_y = digits["retain"]
    # Remove one ordinary record; the forget set stays in the retained data.
    data = ForgetRetain(
        retain_x[:1], retain_y[:1],
        torch.cat([forget_x, retain_x[1:]]), torch.cat([forget_y, retain_y[1:]]),
    )
    _, _, reference = train("logistic_regression", {"l2": 0.01}, data.retain_x, data.retain_y)
    result = get_method("certified_newton").run(MethodCall(family, original, config, data, None, seed=SEED))
    details = result.details
    print(f"\nsingle removal: residual {details['residual_norm']:.4f} of budget {details['budget']:.4f}")
    assert details["residual_norm"] < details["budget"] and details["within_budget"]
    assert relative_distance(result.network, reference) <= 0.1 * relative_distance(original, reference)


def test_removal_budget_formula_and_refusals(digits, logistic_runs, mlp_runs):
    spec = get_family("logistic_regression")
    config = spec.parse_params({"perturbation_sigma": 2.0, "epsilon": 0.5, "delta": 1e-3})
    assert removal_budget(config) == pytest.approx(2.0 * 0.5 / np.sqrt(2 * np.log(1.5 / 1e-3)))

    method = get_method("certified_newton")
    family, _, original, _ = logistic_runs
    with pytest.raises(CertifiedRemovalUnsupported, match="loss perturbation"):
        method.run(MethodCall(family, original, spec.parse_params({"perturbation_sigma": 0}), split(digits), None, seed=SEED))
    mlp_family, mlp_config, mlp_network, _ = mlp_runs
    with pytest.raises(CertifiedRemovalUnsupported, match="logistic_regression"):
        method.run(MethodCall(mlp_family, mlp_network, mlp_config, split(digits), None, seed=SEED))


def test_closed_form_hessian_matches_autograd():
    generator = torch.Generator().manual_seed(4)
    network = torch.nn.Linear(3, 4).double()
    x = torch.randn(25, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 4, (25,), generator=generator)
    config = get_family("logistic_regression").parse_params({"l2": 0.3})
    perturbation = perturbation_vector(network, config, seed=2).double()
    params = list(network.parameters())
    value = objective(network, config, x, y, perturbation)
    gradient = torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params, create_graph=True)])
    expected = torch.stack(
        [
            torch.cat([h.reshape(-1) for h in torch.autograd.grad(g, params, retain_graph=True)])
            for g in gradient
        ]
    )
    found = softmax_regression_hessian(network.weight.detach(), network.bias.detach(), x, 0.3)
    assert torch.allclose(found, expected, atol=1e-10)


def test_registry_and_config_parsing():
    assert set(METHODS) == {"finetune", "neggrad_plus", "scrub", "salun", "certified_newton", "gradient_difference", "npo"}
    assert EXACT_METHODS == {"retrain", "sisa"}
    assert not EXACT_METHODS & set(METHODS)
    assert parse_method_config("scrub", {"epochs": 3}).epochs == 3
    with pytest.raises(MethodConfigError, match="unknown setting.*'learning_rat'.*allowed"):
        parse_method_config("finetune", {"learning_rat": 0.1})
    with pytest.raises(MethodConfigError, match="epochs"):
        parse_method_config("finetune", {"epochs": 0})
    with pytest.raises(MethodConfigError, match="max_epochs"):
        parse_method_config("scrub", {"epochs": 2, "max_epochs": 3})
    with pytest.raises(UnknownMethodError, match="exact method"):
        get_method("sisa")
    with pytest.raises(UnknownMethodError, match="unknown unlearning method"):
        get_method("amnesia")


def test_forget_retain_rejects_malformed_sets():
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="forget set is empty"):
        ForgetRetain(x[:0], y[:0], x, y)
    with pytest.raises(ValueError, match="int64"):
        ForgetRetain(x, y.int(), x, y)
    with pytest.raises(ValueError, match="width"):
        ForgetRetain(torch.zeros(4, 2), y, x, y)


def test_mia_auc_on_known_inputs():
    assert mia_auc([0.1, 0.2], [1.0, 2.0, 3.0]) == 1.0
    assert mia_auc([1.0, 2.0], [0.1, 0.2]) == 0.0
    assert mia_auc([0.5, 0.5, 0.5], [0.5, 0.5]) == 0.5
    assert mia_auc(np.arange(10.0), np.arange(10.0)) == 0.5
    # Of the four member/non-member pairs two favour the member, one ties, one is reversed.
    assert mia_auc([1.0, 3.0], [2.0, 3.0]) == pytest.approx((2 + 0.5) / 4)
    assert mia_auc([], [1.0]) is None and mia_auc([1.0], []) is None


def test_ensemble_and_empty_sets(mlp_runs, digits):
    family, _, original, reference = mlp_runs
    x, y = digits["holdout"]
    single = accuracy_and_loss(family, original, x, y)
    assert accuracy_and_loss(family, [original], x, y) == single
    ensemble = accuracy_and_loss(family, [original, reference], x, y)
    mean = (family.predict_proba(original, x) + family.predict_proba(reference, x)) / 2
    assert ensemble["accuracy"] == pytest.approx((mean.argmax(1) == y).double().mean().item())
    assert accuracy_and_loss(family, original, x[:0], y[:0]) == {"accuracy": None, "loss": None, "n": 0}
    found = verify(family, original, digits["forget"], digits["retain"], None)
    assert found["holdout"]["n"] == 0 and found["mia_auc"] is None




def _per_record_losses(network, x, y):
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(network(x), y, reduction="none")


def test_neggrad_plus_aims_each_record_at_its_own_unseen_loss(digits, mlp_runs):
    from workers.engine.unlearning.stopping import SHORTFALL, shortfall

    family, config, original, reference = mlp_runs
    # The retrain never saw the forget records: its loss on each is that record's target.
    targets = _per_record_losses(reference, *digits["forget"])
    data = ForgetRetain(*digits["forget"], *digits["retain"], *digits["atypical_holdout"], forget_target_loss=targets)
    settings = parse_method_config("neggrad_plus", {"target_epochs": 30, "max_cost": None})
    result = get_method("neggrad_plus").run(MethodCall(family, original, config, data, settings, seed=7))
    details = result.details
    assert details["per_record_targets"] is True and details["stopped_at_step"] is not None
    assert shortfall(original, data) > 0.5 and shortfall(result.network, data) <= SHORTFALL
    after = _per_record_losses(result.network, *digits["forget"])
    before = _per_record_losses(original, *digits["forget"])
    # Most records, memorised before, now sit near what a model that never saw them gives.
    assert float((after - targets).abs().median()) < float((before - targets).abs().median()) / 2


def test_neggrad_plus_stops_at_its_cost_cap(digits, mlp_runs):
    family, config, original, _ = mlp_runs
    data = ForgetRetain(*digits["forget"], *digits["retain"], *digits["atypical_holdout"])
    settings = parse_method_config("neggrad_plus", {"max_cost": 0.02})
    details = get_method("neggrad_plus").run(MethodCall(family, original, config, data, settings, seed=7)).details
    budget = 0.02 * config.epochs * (data.n_forget + data.n_retain)
    assert details["cost_budget_examples"] == pytest.approx(budget)
    assert details["cost_budget_exhausted_at_step"] == details["stopped_at_step"] == details["steps"]
    # Each step takes a retain and a forget batch (160 examples at most): the cap binds early.
    assert details["steps"] <= budget / 32 + 1
    uncapped = get_method("neggrad_plus").run(MethodCall(family, original, config, data,
                                              parse_method_config("neggrad_plus", {"max_cost": None}), seed=7)).details
    assert uncapped["cost_budget_examples"] is None and uncapped["steps"] > details["steps"]
