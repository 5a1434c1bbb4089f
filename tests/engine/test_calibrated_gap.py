"""The stopping rule that aims at the verdict's own calibrated forget accuracy gap, measured on the
tuning half of the references and of the holdout (workers/engine/unlearning/stopping.py
`CalibratedGap`), and what feeds it (references.reference_correctness)."""

import numpy as np
import pytest
import torch
from torch import nn

from app.families.registry import get_family
from tests.engine.mislabelled import mislabelled_digits
from workers.engine import training
from workers.engine.families.base import Shape
from workers.engine.unlearning.base import ForgetRetain, MethodCall, get_method, parse_method_config
from workers.engine.unlearning.stopping import CalibratedGap, calibrated_gap
from workers.engine.verification.checks import Policy, reference_gap_check
from workers.engine.verification.references import reference_correctness
from workers.engine.verification.scores import MembershipInputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
SHAPE = Shape(n_features=64, n_classes=10)


class Fixed(nn.Module):
    """Logits that put each record's answer where the test says: class `answers[i]`."""

    def __init__(self, answers: dict[float, int]) -> None:
        super().__init__()
        self.answers = answers
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 3)
        for row, key in enumerate(x[:, 0].tolist()):
            logits[row, self.answers[key]] = 1.0
        return logits + 0 * self.weight


def _data(forget_correct, unseen_correct, forget_refs, unseen_refs):
    """Records whose first feature is their key; the network answers right where `*_correct`."""
    n, m = len(forget_correct), len(unseen_correct)
    fx = torch.arange(n, dtype=torch.float32).view(-1, 1)
    ux = (1000 + torch.arange(m, dtype=torch.float32)).view(-1, 1)
    fy, uy = torch.zeros(n, dtype=torch.int64), torch.zeros(m, dtype=torch.int64)
    answers = {float(i): 0 if c else 1 for i, c in enumerate(forget_correct)}
    answers.update({1000.0 + i: 0 if c else 2 for i, c in enumerate(unseen_correct)})
    data = ForgetRetain(fx, fy, fx[:1] + 5000, fy[:1], unseen_x=ux, unseen_y=uy,
                        forget_reference_correct=torch.tensor(forget_refs, dtype=torch.float64),
                        unseen_reference_correct=torch.tensor(unseen_refs, dtype=torch.float64))
    answers[5000.0] = 0
    return Fixed(answers), data


def test_the_rule_measures_the_verdicts_statistic():
    rng = np.random.default_rng(3)
    forget_correct = rng.random(40) < 0.9
    unseen_correct = rng.random(30) < 0.7
    # Four references in two complementary pairs: each forget record is OUT for one of each pair.
    out = np.zeros((40, 4), dtype=bool)
    side = rng.integers(0, 2, (40, 2))
    out[np.arange(40), side[:, 0]] = True
    out[np.arange(40), 2 + side[:, 1]] = True
    forget_matrix = (rng.random((40, 4)) < 0.75).astype(float)
    unseen_matrix = (rng.random((30, 4)) < 0.75).astype(float)
    forget_refs = (forget_matrix * out).sum(axis=1) / out.sum(axis=1)
    network, data = _data(forget_correct, unseen_correct, forget_refs, unseen_matrix.mean(axis=1))
    inputs = MembershipInputs(np.zeros(40), np.zeros((40, 4)), out, np.zeros(30), np.zeros((30, 4)),
                              np.ones((30, 4), dtype=bool), forget_references_correct=forget_matrix,
                              null_references_correct=unseen_matrix)
    verdict = reference_gap_check(forget_correct.astype(float), inputs, unseen_correct.astype(float), Policy())
    assert verdict.estimate is not None and abs(verdict.estimate) > 0.05
    assert calibrated_gap(network, data) == pytest.approx(verdict.estimate)


def test_without_the_tuning_instruments_the_rule_is_off():
    network, data = _data([True, True], [True], [0.5, 0.5], [1.0])
    data.forget_reference_correct = None
    assert calibrated_gap(network, data) is None
    rule = CalibratedGap(network, data)
    assert not rule.enabled and not rule.observe(network, data, 1) and rule.rewind(network) is None
    assert rule.details()["calibrated_gap_start"] is None


def test_the_rule_keeps_the_weights_closest_to_a_closed_gap_on_either_side():
    network = nn.Linear(2, 3)
    forget_x, unseen_x = torch.eye(2)[:1], torch.eye(2)[1:]
    data = ForgetRetain(forget_x, torch.zeros(1, dtype=torch.int64), forget_x, torch.zeros(1, dtype=torch.int64),
                        unseen_x=unseen_x, unseen_y=torch.zeros(1, dtype=torch.int64),
                        forget_reference_correct=torch.tensor([0.6], dtype=torch.float64),
                        unseen_reference_correct=torch.tensor([0.0], dtype=torch.float64))

    def answer(forget_right: bool, unseen_right: bool) -> None:
        with torch.no_grad():
            network.weight.zero_()
            network.bias.zero_()
            network.weight[0 if forget_right else 1, 0] = 1.0
            network.weight[0 if unseen_right else 2, 1] = 1.0

    answer(True, False)  # gap (1 − 0.6) − (0 − 0) = 0.4
    rule = CalibratedGap(network, data)
    assert rule.start == pytest.approx(0.4) and not rule.closed
    answer(True, True)  # (1 − 0.6) − (1 − 0) = −0.6: overshot
    assert rule.observe(network, data, 10) and rule.closed_at == 10
    # The start (|0.4|) is closer to a closed gap than the overshoot (|−0.6|): rewound to it.
    assert rule.rewind(network) == 0
    assert calibrated_gap(network, data) == pytest.approx(0.4)
    assert rule.details()["calibrated_gap_best"] == {"step": 0, "gap": pytest.approx(0.4)}


def test_an_original_with_no_gap_is_left_as_it_is():
    network, data = _data([True, False], [True], [0.5, 0.5], [1.0])  # (0.5 − 0.5) − (1 − 1) = 0
    rule = CalibratedGap(network, data)
    assert rule.enabled and rule.closed and rule.closed_at == 0


def test_reference_correctness_reads_the_out_references_only():
    spec = get_family("mlp_classifier")
    family, config = spec.load_implementation(), spec.parse_params({"hidden": [8], "epochs": 1})
    digits = mislabelled_digits(10)
    x, y = digits["forget"]
    refs = [training.new_network(family, config, SHAPE, seed=s) for s in range(4)]
    out = np.array([[True, False, True, False]] * 5 + [[False, True, False, True]] * 5)
    found = reference_correctness(family, refs, (x, y), out, digits["holdout"])
    assert found is not None
    per_ref = np.column_stack([(family.predict_proba(r, x).argmax(1) == y).double().numpy() for r in refs])
    assert found[0] == pytest.approx(np.where(out, per_ref, 0).sum(axis=1) / 2)
    hx, hy = digits["holdout"]
    unseen = np.column_stack([(family.predict_proba(r, hx).argmax(1) == hy).double().numpy() for r in refs])
    assert found[1] == pytest.approx(unseen.mean(axis=1))
    out[0] = False
    assert reference_correctness(family, refs, (x, y), out, digits["holdout"]) is None
    assert reference_correctness(family, refs, (x, y), out[:0], (hx[:0], hy[:0])) is None


@pytest.fixture(scope="module")
def memorised():
    """An MLP that memorised 40 mislabelled digits, and one trained without them (the retrain)."""
    digits = mislabelled_digits(40)
    spec = get_family("mlp_classifier")
    family, config = spec.load_implementation(), spec.parse_params({"hidden": [128], "epochs": 100,
                                                                    "learning_rate": 3e-3})

    def train(x, y):
        network = training.new_network(family, config, SHAPE, seed=1)
        network.load_state_dict(training.train_single(family, config, SHAPE, x, y, seed=1, device=CPU))
        return network

    forget, retain = digits["forget"], digits["retain"]
    original = train(torch.cat([forget[0], retain[0]]), torch.cat([forget[1], retain[1]]))
    return digits, family, config, original, train(*retain)


def test_neggrad_plus_aims_at_a_closed_tuning_gap(memorised):
    digits, family, config, original, retrain = memorised
    # The retrain stands in for the tuning references: it never saw the forget records.
    forget_refs = (family.predict_proba(retrain, digits["forget"][0]).argmax(1) == digits["forget"][1]).double()
    unseen_x, unseen_y = digits["holdout"]
    unseen_refs = (family.predict_proba(retrain, unseen_x).argmax(1) == unseen_y).double()
    with torch.no_grad():
        targets = torch.nn.functional.cross_entropy(retrain(digits["forget"][0]), digits["forget"][1], reduction="none")
    data = ForgetRetain(*digits["forget"], *digits["retain"], unseen_x=unseen_x, unseen_y=unseen_y,
                        forget_target_loss=targets, forget_reference_correct=forget_refs,
                        unseen_reference_correct=unseen_refs)
    start = calibrated_gap(original, data)
    assert start is not None and start > 0.3
    result = get_method("neggrad_plus").run(MethodCall(family, original, config, data,
                                                       parse_method_config("neggrad_plus", {"max_cost": None}), seed=7))
    details = result.details
    assert details["calibrated_gap_start"] == pytest.approx(start)
    # Checked every `check_every` steps; a run stops at the check where the gap has closed.
    assert details["calibrated_gap_checks"] >= details["steps"] // 5
    assert details["calibrated_gap_closed_at_step"] in (None, details["steps"])
    # Kept where the gap came closest to 0, on either side, and that is where the network is now.
    kept = details["calibrated_gap_best"]
    assert details["rewound_to_step"] == kept["step"]
    assert calibrated_gap(result.network, data) == pytest.approx(kept["gap"])
    assert abs(kept["gap"]) < start / 4
    # The original is untouched.
    assert calibrated_gap(original, data) == pytest.approx(start)
    # Switched off, the same run does not read the instruments.
    off = get_method("neggrad_plus").run(MethodCall(family, original, config, data, parse_method_config(
        "neggrad_plus", {"max_cost": None, "target_calibrated_gap": False}), seed=7)).details
    assert off["calibrated_gap_start"] is None and off["rewound_to_step"] is None
