"""What the training and unlearning benchmarks share: the machine, the data, training a model
through the same functions the training job runs, timing and tables.

Models are trained with `workers.engine.partition.partition` and `workers.engine.shards.train_shards`, so
the weights, checkpoints and manifests are exactly what the service would store; only the
dataset upload and the database are left out. Artifacts go to a temporary data folder.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS = ROOT / "bench" / "results"

# Fixed hyper-parameters, spelled out rather than taken from the family defaults, so a change of
# default does not silently change what the published figures measure.
MLP_PARAMS = {"hidden": [128], "epochs": 20, "learning_rate": 1e-3, "batch_size": 128,
              "weight_decay": 0.0, "dropout": 0.0}
LOGISTIC_PARAMS = {"epochs": 30, "learning_rate": 0.1, "batch_size": 256, "l2": 1e-3,
                   "perturbation_sigma": 1.0, "epsilon": 1.0, "delta": 1e-4}


def setup(workdir: Path, threads: int) -> None:
    """Point the service's settings at a scratch data folder and fix the torch thread count.

    The product's own training and unlearning jobs call `set_determinism()` the same way.
    """
    os.environ.update(
        OBLIVIATE_DATA_DIR=str(workdir / "data"), OBLIVIATE_DEVICE="cpu", OBLIVIATE_LOG_LEVEL="WARNING",
        OBLIVIATE_SECRET_KEY="bench-k7Qm2vX9LpT4rw8ZnB1c6F3hJd5G0sYe",
    )
    for name in ("OBLIVIATE_ARTIFACTS_URL", "OBLIVIATE_DATABASE_URL"):
        os.environ.pop(name, None)
    from app import config
    from workers.engine.training import set_determinism

    config.reset_settings()
    set_determinism()
    torch.set_num_threads(threads)


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": model, "cores": os.cpu_count(), "usable_cores": usable,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(), "python": platform.python_version(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def describe_machine(info: dict[str, Any]) -> str:
    return (f"{info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), torch {info['torch']} "
            f"with {info['torch_threads']} intra-op thread(s), Python {info['python']}; "
            f"load average {info['load_average_start']} at start, {info.get('load_average_end')} at end")


def finish_machine(info: dict[str, Any]) -> None:
    # Other work on the machine inflates wall times; the load average tells the reader how much.
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]


# Data.


def subject_key(index: int) -> str:
    """A subject key of the shape the service stores (64 hex characters)."""
    return hashlib.sha256(f"subject-{index}".encode()).hexdigest()


def as_records(features: np.ndarray, labels: np.ndarray, rows_per_subject: float, seed: int):
    """Records with every row owned by a random subject, about `rows_per_subject` rows each,
    and the rows of one subject scattered through the data as in a real upload."""
    from workers.engine.records import Records

    rng = np.random.default_rng(seed)
    n = len(labels)
    n_subjects = max(1, round(n / rows_per_subject))
    owner = rng.integers(0, n_subjects, n)
    keys = np.array([subject_key(i) for i in range(n_subjects)], dtype=object)
    return Records(
        record_ids=np.arange(n, dtype=np.int64), subject_keys=keys[owner],
        features=np.ascontiguousarray(features, dtype=np.float32), labels=labels.astype(np.int64),
    )


def generated_records(rows: int, seed: int, features: int = 32, classes: int = 10, rows_per_subject: float = 8):
    from sklearn.datasets import make_classification

    # 5% flipped labels give the network records it can only get right by memorising them,
    # which is what membership inference and unlearning are about.
    x, y = make_classification(
        n_samples=rows, n_features=features, n_informative=features // 2, n_redundant=features // 4,
        n_classes=classes, n_clusters_per_class=1, flip_y=0.05, class_sep=1.0, random_state=seed,
    )
    return as_records(x, y, rows_per_subject, seed)


def digits_records(seed: int, rows_per_subject: float = 3):
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixels are 0..16; scaled to 0..1 so L-BFGS and Adam see features of unit size.
    return as_records(digits.data / 16.0, digits.target, rows_per_subject, seed)


# Training through the product's code path.


@dataclass
class Trained:
    spec: Any
    family: Any
    config: Any
    shape: Any
    seed: int
    sisa: dict | None
    holdout_fraction: float
    records: Any
    manifest: Any
    shards: list[Any]  # app.unlearning.types.Shard
    partition_s: float
    train_s: float
    train_cpu_s: float


def train_model(records, family_name: str, params: dict, *, seed: int, sisa: dict | None,
                holdout_fraction: float) -> Trained:
    from app.families.registry import get_family
    from workers.engine.families.base import Shape
    from app.unlearning.types import Sisa
    from workers.engine.partition import partition
    from workers.engine.shards import train_shards

    spec = get_family(family_name)
    config, family = spec.parse_params(params), spec.load_implementation()
    shape = Shape(n_features=records.features.shape[1], n_classes=max(int(records.labels.max()) + 1, 2))
    started = time.perf_counter()
    manifest = partition(records.record_ids, records.subject_keys, seed=seed, holdout_fraction=holdout_fraction,
                         shards=sisa["shards"] if sisa else 1, slices=sisa["slices"] if sisa else 1)
    partition_s = time.perf_counter() - started
    count = sisa["shards"] if sisa else 1
    trained, wall, cpu = timed(lambda: train_shards(
        family=family, config=config, shape=shape, records=records, manifest=manifest, seed=seed,
        sisa=Sisa.from_json(sisa), shard_list=list(range(count)),
    ))
    return Trained(spec, family, config, shape, seed, sisa, holdout_fraction, records, manifest,
                   [trained[s] for s in range(count)], partition_s, wall, cpu)


def version_metrics(model: Trained) -> dict[str, Any]:
    """The figures the training job stores with a version (holdout and a training sample)."""
    from workers.training import evaluate_version

    return evaluate_version(model.family, model.config, model.shape, model.records, model.manifest, model.shards)


# Timing and output.


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process). CPU time is the steadier of the two
    when other processes compete for the cores."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    print(f"\nwrote {path}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
