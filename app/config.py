"""Settings, read from the environment with the prefix OBLIVIATE_."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that must never protect real pseudonyms; refused outside the embedded default. In the
# embedded default they select the generated key instead, as they always have.
WEAK_SECRETS = {"", "change-me", "changeme", "secret", "obliviate"}
# Shortest accepted OBLIVIATE_SECRET_KEY outside the embedded default: 32 hex characters are
# 128 bits. Fewer characters can be brute-forced from one known pseudonym.
MIN_SECRET_LENGTH = 32
# A key this long but made of fewer distinct characters is a pattern, not randomness.
MIN_SECRET_DISTINCT = 8
# Placeholders, compared case-insensitively on letters and digits only ("Change_Me" is "changeme").
PLACEHOLDER_SECRETS = {
    "changeme", "secret", "secretkey", "password", "obliviate", "test", "testing", "default", "example",
    "insecure", "dev", "development", "yoursecretkey", "mysecretkey", "supersecret", "supersecretkey",
    "replaceme", "placeholder", "todo", "fixme", "xxx", "123456", "12345678", "0123456789",
}
# Marks of a placeholder inside a longer value; long words only, so that a random base64 key
# never contains one by chance.
PLACEHOLDER_WORDS = ("changeme", "replaceme", "placeholder", "yoursecret", "insecure", "donotuse")
GENERATE_SECRET = 'python -c "import secrets; print(secrets.token_hex(32))"'


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OBLIVIATE_", extra="ignore")

    data_dir: Path = Path("./.obliviate")
    # Empty means the embedded default: a SQLite file and a SQLite-backed broker under data_dir.
    database_url: str = ""
    broker_url: str = ""
    # Where Celery keeps the answers of calls that return one (predictions on the inference
    # queue). Empty: the broker's Redis when the broker is Redis, the broker's database
    # (db+postgresql://...) for a database broker, and data_dir/results.db in the embedded default.
    result_backend_url: str = ""
    # How long a prediction waits for an inference worker before answering 503 with Retry-After.
    inference_timeout_seconds: float = 30.0
    # Predictions waiting for their answer at once, per API process: each holds a thread of its
    # own (not one of api_threads) while it waits; more wait for a free one within the timeout.
    inference_threads: int = 16
    # HMAC key for subject pseudonyms. Empty in the embedded default means: generate one once and
    # keep it in data_dir/secret.key, so pseudonyms stay stable across restarts.
    secret_key: str = ""
    # Where artifacts live: a local folder (default data_dir/artifacts) or any fsspec URL.
    artifacts_url: str = ""

    auto_approve_verified: bool = False
    max_body_bytes: int = 1024 * 1024
    max_batch_items: int = 1000
    idempotency_in_flight_seconds: int = 60
    # Intake requests doing their database work at once, per API process. A few keep the
    # database busy and let its commits group; more threads only queue for Python's GIL, which
    # costs CPU and latency (bench/intake.py). The others wait their turn without a thread.
    intake_threads: int = 4
    # PostgreSQL only: new requests without an Idempotency-Key are stored by one autocommitted
    # statement awaited on the event loop (app/asyncdb.py), over a pool of this many connections
    # per API process; a request waits up to intake_connection_timeout seconds for one, then gets
    # 503 with Retry-After.
    intake_connections: int = 8
    intake_connection_timeout: float = 5.0
    # Threads per API process for blocking endpoint work (anyio's default is 40). The SQLite pool
    # is sized from it (app/db.py), so a thread never waits for a connection another thread holds.
    api_threads: int = 40
    # Lock-taking writes (every unit-of-work POST) of one client in progress at once in one API
    # process, running or waiting for a lock or a thread; above it 429. Without a bound, one
    # client's burst waiting on one lock holds every thread, and the whole API stops answering.
    max_waiting_writes_per_client: int = 16
    # PostgreSQL: how long a write waits for a row or advisory lock, and runs one statement,
    # before it gives up with 503 and Retry-After instead of holding its thread (0: no limit).
    write_lock_timeout_seconds: float = 5.0
    write_statement_timeout_seconds: float = 60.0
    log_level: str = "INFO"
    # Region (ISO 3166 code, e.g. "DE") that a phone identifier without a country code is read
    # in when intake validates it; empty means such numbers are refused. Validation only: the
    # subject key is computed from the digits as written, whatever the region.
    phone_default_region: str = ""
    # How long an API process trusts what it last read about a key. A key revoked in one process
    # is refused by every other within this many seconds; at most 5, 0 reads the key every time.
    principal_cache_seconds: float = Field(default=5.0, ge=0, le=5)

    # Data and models (datasets, training).
    max_upload_bytes: int = 256 * 1024 * 1024
    # Rows one dataset upload may have. Parquet compresses repeated values to almost nothing, so
    # the byte limit above does not bound the rows; checked from the footer (Parquet) or by a
    # streaming count (CSV) before the file is decoded → 413.
    max_dataset_rows: int = Field(default=5_000_000, ge=1)
    # Memory one upload may take while it is ingested, as estimated from its rows and columns
    # before decoding (app/datasets/limits.py) → 413 above it. Size it to the API host.
    max_upload_memory_bytes: int = Field(default=4 * 1024**3, ge=1)
    max_predict_rows: int = 10_000
    # Model budgets (app/families/budget.py), checked before a model is queued or imported and
    # before a background job (references, rehearsal) is scheduled → 422 naming the figure.
    max_model_parameters: int = Field(
        default=100_000_000, ge=1,
        description="Most parameters one model may have (training, import, references, rehearsal); over it → 422.",
    )
    max_training_memory_bytes: int = Field(
        default=8 * 1024**3, ge=1,
        description="Most memory training one model may need, as estimated from its params: float32 weights, "
                    "gradients and optimiser moments plus one batch's activations; over it → 422.",
    )
    max_training_flops: float = Field(
        default=1e15, gt=0,
        description="Most floating-point operations training one model may take, estimated as 6 × parameters × "
                    "positions processed (records × epochs, or steps × batch_size × block_size tokens); over it → 422.",
    )
    # Text datasets and language models. One record's text may be at most this many UTF-8 bytes
    # (longer → 422 naming the record); a generate prompt or a scored text at most
    # max_prompt_bytes (→ 413); one generate call at most max_new_tokens new tokens (→ 422).
    max_text_bytes: int = Field(default=64 * 1024, ge=1)
    max_prompt_bytes: int = Field(default=16 * 1024, ge=1)
    # A JSON Lines text dataset is read a line at a time, keeping only the subject and text
    # columns (app/datasets/text.py).
    max_jsonl_line_bytes: int = Field(
        default=1024 * 1024, ge=1,
        description="Longest line of a JSON Lines text dataset, in bytes; a longer line → 422 naming its number.",
    )
    max_jsonl_keys: int = Field(
        default=64, ge=2,
        description="Most distinct keys the lines of a JSON Lines text dataset may use in all; more → 422. "
                    "Only the subject and text columns are kept.",
    )
    max_new_tokens: int = Field(default=1024, ge=1)
    device: str = "auto"
    # Intra-op threads of torch in workers; 0 keeps torch's default (all cores). On a CPU host
    # shared with other processes, 1 avoids oversubscription that slows small networks tenfold.
    torch_threads: int = 0
    job_lease_seconds: int = 120
    job_max_attempts: int = 5
    job_max_lost_leases: int = Field(
        default=2, ge=1,
        description="Attempts of one job whose worker died without a heartbeat (lease expired, most often a kill for "
                    "memory) before the job fails with \"worker died, likely out of memory\" instead of being retried.",
    )
    max_active_jobs_per_client: int = 8
    # Beat period of the lease sweeper and of the sweeper that finishes pending artifact deletions.
    sweep_interval_seconds: float = 15.0

    # Unlearning.
    batch_window_seconds: float = 60.0
    deadline_margin_hours: float = 72.0
    small_model_rows: int = 200_000
    approximate_method: str = "finetune"
    # Verification (workers/engine/verdicts.py). Every check answers an estimate with an interval
    # at level 1 − 2α, each end a one-sided 1 − α bound; it passes when the interval lies within
    # its tolerance (a test at level α), fails when it lies beyond, and is inconclusive otherwise. An approximate method passes only when every check
    # passes; exact methods record their verdicts and never escalate on them.
    verification_alpha: float = Field(default=0.05, gt=0, lt=0.5)
    # The defaults let a real retrain of about 100 forget records (25 subjects) pass: below that
    # the intervals are wider than any useful tolerance and the checks say inconclusive.
    # |forget accuracy − holdout accuracy| (fraction: 0.15 = 15 points).
    tolerance_forget_gap: float = Field(default=0.15, ge=0, le=1)
    # The same gap calibrated record by record by the reference models (a difference in
    # differences, far less noisy), where the model has references.
    tolerance_reference_gap: float = Field(default=0.075, ge=0, le=1)
    # |AUC − 0.5| of the loss-threshold membership attack, forget vs holdout records.
    tolerance_mia_auc: float = Field(default=0.10, ge=0, le=0.5)
    # Per-record audit advantage TPR − FPR against reference models or SISA shards.
    tolerance_audit: float = Field(default=0.15, ge=0, le=1)
    # Holdout accuracy lost against the version before (paired on the same records).
    tolerance_holdout_drop: float = Field(default=0.03, ge=0, le=1)
    # Language models: forget − holdout share of records extracted verbatim (one-sided).
    tolerance_extraction: float = Field(default=0.05, ge=0, le=1)
    # Per-record level at which the audit counts TPR and FPR, and δ of its ε lower bound.
    audit_record_level: float = Field(default=0.05, gt=0, lt=0.5)
    audit_delta: float = Field(default=0.0, ge=0, lt=1)
    # Reference models kept per model for the per-record audit (even; 0 = none). Trained with
    # every model whose unlearning method is approximate, set or chosen.
    audit_references: int = Field(default=8, ge=0, le=64)
    # An erasure destroys the references that held its subjects; the job that trains their
    # replacements waits this long, so the unlearning jobs of the same window go first.
    reference_refill_delay_seconds: float = Field(default=300.0, ge=0)
    # The unlearning rehearsal (workers/rehearsal.py): after training a model whose unlearning
    # method is approximate, erase this many random trained subjects in memory, retrain without
    # them and compare each approximate method's result with that retrain; jobs then start with
    # the settings that passed. It waits rehearsal_delay_seconds, like the reference refill.
    rehearsal: bool = True
    rehearsal_subjects: int = Field(default=25, ge=1, le=1000)
    rehearsal_delay_seconds: float = Field(default=300.0, ge=0)
    # Deprecated fixed thresholds; when set they replace the matching tolerance above
    # (max_mia_auc − 0.5 for the AUC), so an older deployment keeps its policy.
    max_forget_holdout_gap: float | None = None
    max_mia_auc: float | None = None
    max_holdout_drop: float | None = None
    plan_interval_seconds: float = 5.0
    signing_key_path: str = ""
    # Audit anchoring. Signed checkpoints of the audit log are also written here, outside the
    # database (a folder or any fsspec URL; default: <artifacts_url>/checkpoints), so that someone
    # who can rewrite the database cannot also rewrite the checkpoints an auditor compares with.
    checkpoint_dir: str = ""
    # How often beat signs a checkpoint over new events (at most 60 s, the promised bound).
    checkpoint_interval_seconds: float = Field(30.0, gt=0, le=60)
    # The checkpoints' origin line and key name; default obliviate/audit/<signing key id>.
    checkpoint_origin: str = ""
    # PostgreSQL: the role the API and workers log in as. When set, `obliviate db upgrade` (run as
    # the tables' owner) grants it only the row access it needs, so it cannot drop triggers.
    db_service_role: str = ""
    webhook_max_attempts: int = 6
    # Callback URLs are https only; true also allows plain http (a test or an internal receiver).
    webhook_allow_http: bool = False
    # Webhooks never go to loopback, private, link-local, multicast or reserved addresses, at
    # intake or at delivery, except to these networks (CIDR, JSON list, e.g. ["10.1.2.0/24"]) and
    # these host names (exempt from the address checks: the operator vouches for what they
    # resolve to). Both empty by default.
    webhook_allow_networks: list[str] = []
    webhook_allow_hosts: list[str] = []
    # `obliviate serve` restarts a worker that died after this many seconds, doubling each time
    # it dies again soon (at most a minute), so a worker that cannot start does not spin.
    worker_restart_backoff_seconds: float = 1.0

    # Admin dashboard (/admin). A session ends after this many seconds without a page view...
    dashboard_idle_seconds: int = 30 * 60
    # ...and after this many seconds in any case, however active.
    dashboard_session_seconds: int = 12 * 3600
    # Failed logins allowed per client address within the window before the form answers 429.
    dashboard_login_attempts: int = 10
    dashboard_login_window_seconds: int = 15 * 60
    # Proxies (addresses or CIDR networks, comma-separated) whose X-Forwarded-For is believed for
    # the login rate limit. Empty: the peer address is the client, whatever the header says.
    trusted_proxies: str = ""

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: str) -> str:
        # A typo here would silently trust nobody (or everybody); refuse it at start instead.
        for item in value.split(","):
            try:
                item.strip() and ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"OBLIVIATE_TRUSTED_PROXIES: {item.strip()!r} is not an address or network") from None
        return value

    def verification_tolerances(self) -> dict[str, float]:
        """The tolerances in force: the deprecated thresholds where set, else the tolerances."""
        return {
            "forget_gap": self.tolerance_forget_gap if self.max_forget_holdout_gap is None else self.max_forget_holdout_gap,
            # An older deployment's gap threshold bounds the calibrated gap too.
            "reference_gap": self.tolerance_reference_gap if self.max_forget_holdout_gap is None else self.max_forget_holdout_gap,
            "mia_auc": self.tolerance_mia_auc if self.max_mia_auc is None else self.max_mia_auc - 0.5,
            "audit": self.tolerance_audit,
            "holdout_drop": self.tolerance_holdout_drop if self.max_holdout_drop is None else self.max_holdout_drop,
            "extraction": self.tolerance_extraction,
        }

    @property
    def embedded(self) -> bool:
        return self.database_url == "" or self.database_url.startswith("sqlite")

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'obliviate.db').resolve()}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"
        if not self.result_backend_url:
            self.result_backend_url = _default_result_backend(self.broker_url, self.data_dir)
        if not self.artifacts_url:
            self.artifacts_url = str((self.data_dir / "artifacts").resolve())
        return self

    def resolved_secret_key(self) -> bytes:
        # The bytes of an accepted key are used exactly as given (UTF-8 of the value, never
        # decoded from hex or base64): every stored subject key and tombstone depends on them.
        if not self.embedded:
            problem = secret_key_problem(self.secret_key)
            if problem:
                raise RuntimeError(
                    f"OBLIVIATE_SECRET_KEY {problem}; an external database needs at least "
                    f"{MIN_SECRET_LENGTH} random characters (it keys every subject pseudonym). "
                    f"Generate one with: {GENERATE_SECRET}"
                )
            return self.secret_key.encode()
        if self.secret_key and self.secret_key not in WEAK_SECRETS:
            return self.secret_key.encode()
        return _embedded_secret(self.data_dir)


@lru_cache(maxsize=8)
def _default_result_backend(broker_url: str, data_dir: Path) -> str:
    if broker_url.startswith(("redis://", "rediss://")):
        return broker_url
    if broker_url.startswith("sqla+") and not broker_url.startswith("sqla+sqlite"):
        return "db+" + broker_url.removeprefix("sqla+")
    # Its own file, not broker.db: the broker's writers would otherwise hold up every answer.
    return f"db+sqlite:///{(data_dir / 'results.db').resolve()}"


def secret_key_problem(value: str) -> str | None:
    """Why `value` may not key pseudonyms outside the embedded default, or None. Cached: the
    key is resolved on every pseudonym."""
    if not value:
        return "is not set"
    letters = re.sub(r"[^a-z0-9]", "", value.lower())
    if value in WEAK_SECRETS or letters in PLACEHOLDER_SECRETS or any(w in letters for w in PLACEHOLDER_WORDS):
        return "is a known placeholder"
    if len(value) < MIN_SECRET_LENGTH:
        return f"has {len(value)} characters, fewer than {MIN_SECRET_LENGTH}"
    if len(set(value)) < MIN_SECRET_DISTINCT:
        return f"uses fewer than {MIN_SECRET_DISTINCT} distinct characters"
    return None


def _embedded_secret(data_dir: Path) -> bytes:
    path = data_dir / "secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting together must agree on one key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    get_settings.cache_clear()
