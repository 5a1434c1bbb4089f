"""The per-record audit on real networks: a model that still memorises 5 of its 50 forget
records is caught record by record, while the population loss-threshold AUC does not fail it."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from app.families.registry import get_family
from workers.engine import training
from workers.engine.verification import references
from workers.engine.families.base import Shape
from workers.engine.verification.checks import Policy, forgetting_checks
from workers.engine.verification.scores import reference_membership_inputs

CPU = torch.device("cpu")
K = 8
PARAMS = {"hidden": [64], "epochs": 40, "learning_rate": 3e-3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def network(family, config, shape, state):
    built = training.new_network(family, config, shape, seed=0)
    built.load_state_dict(state)
    return built


@pytest.fixture(scope="module")
def planted():
    return build_planted()


def build_planted():
    """1,600 training records (20 % noisy labels, so memorising them shows), a 400-record
    holdout, 50 forget records, five of them relabelled. The target is trained on the retained records plus five forget
    records repeated, which it memorises; the other 45 it never saw."""
    x, y = make_classification(n_samples=2050, n_features=16, n_informative=10, n_classes=5, flip_y=0.2,
                               class_sep=1.5, random_state=0)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
    spec = get_family("mlp_classifier")
    family, config = spec.load_implementation(), spec.parse_params(PARAMS)
    shape = Shape(16, 5)
    planted = np.array([3, 11, 24, 37, 42])
    y[planted] = (y[planted] + 1) % 5  # labels only memorising can get right
    train_x, train_y = x[:1650], y[:1650]
    holdout = (x[1650:], y[1650:])
    forget_index = np.arange(50)
    keys = [f"subject-{i}" for i in range(1650)]
    member = references.membership(keys, K, seed=3)
    refs = [network(family, config, shape, references.train_reference(
        family, config, shape, train_x, train_y, member[:, k], seed=3, index=k, device=CPU)) for k in range(K)]
    kept = torch.cat([train_x[50:], train_x[planted].repeat(12, 1)]), torch.cat([train_y[50:], train_y[planted].repeat(12)])
    target = network(family, config, shape, training.train_single(family, config, shape, *kept, seed=5, device=CPU))
    forget = (train_x[:50], train_y[:50])
    inputs = reference_membership_inputs(family, target, refs, forget, ~member[forget_index], holdout)
    return family, target, forget, holdout, inputs, planted


def test_the_audit_flags_the_five_the_population_auc_does_not(planted):
    family, target, forget, holdout, inputs, planted_ids = planted
    checks = {c.name: c for c in forgetting_checks(family, target, None, forget, holdout, Policy(),
                                                   membership_inputs=inputs, forget_ids=np.arange(50))}
    audit = checks["per_record_audit"]
    assert audit.verdict == "fail", audit.reason
    assert audit.extra["flagged"] == planted_ids.tolist(), audit.extra
    assert audit.reference == "references" and audit.extra["median_out_references"] == K / 2
    assert checks["mia_auc"].verdict != "fail", checks["mia_auc"].reason

