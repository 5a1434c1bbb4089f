"""Settings, read from the environment with the prefix OBLIVIATE_."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

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
    """Every field's description is its row on the settings page (docs/hooks/settings.py)."""

    model_config = SettingsConfigDict(env_prefix="OBLIVIATE_", extra="ignore")

    data_dir: Path = Field(default=Path("./.obliviate"), description=(
        "Folder of the embedded default: database, broker file, secret, artifacts, beat schedule."))
    database_url: str = Field(default="", description=(
        "`postgresql://user:pass@host/db` or `sqlite:///path`; the driver is picked automatically. "
        "Empty: the embedded default, `sqlite:///<data_dir>/obliviate.db`."))
    broker_url: str = Field(default="", description=(
        "Celery broker; `redis://host:6379/0` in production. Empty: `sqla+sqlite:///<data_dir>/broker.db`."))
    result_backend_url: str = Field(default="", description=(
        "Where Celery keeps the answers of predictions (JSON only; each is deleted once read, or after an "
        "hour). Empty: the broker's Redis when the broker is Redis, `db+<url>` for a database broker, "
        "`db+sqlite:///<data_dir>/results.db` in the embedded default."))
    inference_timeout_seconds: float = Field(default=30.0, description=(
        "How long a prediction waits for an inference worker before it answers 503 with `Retry-After`."))
    inference_threads: int = Field(default=16, description=(
        "Predictions waiting for their answer at once per API process, each on a thread of its own outside "
        "`api_threads`; more wait for a free one, and the timeout counts from the request's arrival."))
    secret_key: str = Field(default="", description=(
        "HMAC key of every subject pseudonym; required with an external database, at least 32 characters, "
        "not a placeholder, and estimated at least 100 bits hard to guess (`app/secret_strength.py`: repeats, "
        "runs and common words cost little; a guessable key that already keys stored pseudonyms only warns). "
        "Empty in the embedded default: generated once into "
        "`<data_dir>/secret.key`, so pseudonyms stay stable across restarts. Changing it makes earlier "
        "requests unmatchable."))
    artifacts_url: str = Field(default="", description=(
        "Local folder or any fsspec URL (`s3://bucket/prefix` with the `s3` extra). "
        "Empty: `<data_dir>/artifacts`."))

    auto_approve_verified: bool = Field(default=False, description=(
        "Approve requests whose requester is verified (`identity_verification.status: verified`, or the "
        "deprecated `identity_verified: true`) on receipt, or when their verification is recorded later; the "
        "audit trail says so."))
    unverified_deny_after_days: int | None = Field(default=None, ge=1, le=3650, description=(
        "Deny open requests whose requester is still not verified this many days after receipt, on the ground "
        "`identity_unverified` with their regime's reason (checked by the planner's beat task). Unset: never."))
    unresolvable_kind: Literal["review", "complete"] = Field(default="review", description=(
        "A request made only of identifier kinds that none of the client's datasets or links hold: `review` "
        "moves it to `needs_review` (status reason `unresolvable_identifier_kind`) instead of completing it "
        "as `no_data_found`; `complete` completes it as before."))
    max_body_bytes: int = Field(default=1024 * 1024, description="Largest JSON body; 413 above.")
    max_batch_items: int = Field(default=1000, description="Most requests in one batch intake; 413 above.")
    idempotency_in_flight_seconds: int = Field(default=60, description=(
        "After this long, an unfinished first request with the same `Idempotency-Key` no longer blocks a retry."))
    intake_threads: int = Field(default=4, description=(
        "Intake requests doing their database work at once per API process (the unit of work, SQLite, batch "
        "validation). A few keep the database busy and let its commits group; more only queue on Python's "
        "GIL, which costs CPU and latency (`bench/intake.py`). The others wait their turn without a thread."))
    intake_connections: int = Field(default=8, description=(
        "PostgreSQL only: connections per API process of the intake fast path, which stores a new request "
        "without an `Idempotency-Key` by one autocommitted statement awaited on the event loop."))
    intake_connection_timeout: float = Field(default=5.0, description=(
        "Seconds a request waits for a fast-path connection before it is answered 503 with `Retry-After`."))
    api_threads: int = Field(default=40, description=(
        "Threads per API process for blocking endpoint work. The SQLite pool holds a connection for each "
        "(plus the intake threads), so no thread waits for a connection another thread holds."))
    max_waiting_writes_per_client: int = Field(default=16, description=(
        "Lock-taking writes (every unit-of-work POST) of one client in progress at once per API process, "
        "running or waiting; above it 429 with `Retry-After`. Without a bound, one client's burst waiting "
        "on one lock holds every thread and the whole API stops answering."))
    write_lock_timeout_seconds: float = Field(default=5.0, description=(
        "Longest wait of a write for a row or advisory lock (PostgreSQL) or the write lock (SQLite's "
        "`busy_timeout`), then 503 with `Retry-After` instead of holding its thread (0: no limit)."))
    write_statement_timeout_seconds: float = Field(default=60.0, description=(
        "PostgreSQL: longest statement of a write, then 503 with `Retry-After` (0: no limit)."))
    log_level: str = Field(default="INFO", description="Log level of the API and the command line.")
    phone_default_region: str = Field(default="", description=(
        "ISO 3166 region (e.g. `DE`) in which a `phone` identifier without country code is validated; "
        "empty: such numbers are refused. Validation only: the subject key is computed from the digits "
        "as written, whatever the region."))
    principal_cache_seconds: float = Field(default=5.0, ge=0, le=5, description=(
        "How long an API process trusts what it read about a key; a key revoked in one process is refused "
        "by every other within this time (0: read the key every time)."))

    # Data and models (datasets, training).
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, description="Largest dataset or model upload.")
    max_import_bytes: int = Field(default=2 * 1024**3, ge=1, description=(
        "Largest archive of a Hugging Face base model (`POST /v1/models/import` with `kind: base`), and largest "
        "total of its files once unpacked; 413 above. The archive streams to disk, never into memory."))
    max_dataset_rows: int = Field(default=5_000_000, ge=1, description=(
        "Rows one dataset upload may have; 413 above. Parquet compresses repeated values to almost nothing, "
        "so the byte limit does not bound the rows: they are counted from the footer (Parquet) or by a "
        "streaming count (CSV) before the file is decoded."))
    max_upload_memory_bytes: int = Field(default=4 * 1024**3, ge=1, description=(
        "Memory one dataset upload may need while it is ingested, estimated from its rows and columns "
        "before decoding (`app/datasets/limits.py`); 413 above. Size it to the API host."))
    max_predict_rows: int = Field(default=10_000, description=(
        "Rows per prediction call, and texts per `score` call; 413 above."))
    max_model_parameters: int = Field(default=100_000_000, ge=1, description=(
        "Most parameters one model may have (training, import, references, rehearsal), checked before it is "
        "queued or imported (`app/families/budget.py`); over it 422 naming the figure."))
    max_training_memory_bytes: int = Field(default=8 * 1024**3, ge=1, description=(
        "Most memory training one model may need, as estimated from its params: float32 weights, gradients "
        "and optimiser moments plus one batch's activations; over it 422."))
    max_training_flops: float = Field(default=1e15, gt=0, description=(
        "Most floating-point operations training one model may take, estimated as 6 × parameters × positions "
        "processed (records × epochs, or steps × batch_size × block_size tokens); over it 422."))
    max_text_bytes: int = Field(default=64 * 1024, ge=1, description=(
        "UTF-8 bytes one record of a text dataset may have; a longer one answers 422 naming the record."))
    max_image_pixels: int = Field(default=4_194_304, ge=1, description=(
        "Pixels (height × width) one image of an image dataset may have; a larger one answers 422 naming "
        "the record. Checked from the image's header before its pixels are decoded, so a decompression "
        "bomb is refused without being expanded; also Pillow's own bomb limit in the API process."))
    max_zip_entries: int = Field(default=100_000, ge=1, description=(
        "Files one zip of images may hold; 413 above, read from the archive's directory before anything "
        "is extracted."))
    max_zip_uncompressed_bytes: int = Field(default=1024**3, ge=1, description=(
        "Bytes the files of one zip of images may expand to, together; 413 above. Checked from the "
        "archive's directory and again while reading, with each file's read bounded by its declared size."))
    max_zip_ratio: int = Field(default=100, ge=1, description=(
        "Largest expansion ratio (uncompressed ÷ compressed bytes) of one file of a zip of images; a file "
        "that expands more is a zip bomb and answers 413. Small files (under 64 KiB) are exempt."))
    max_samples: int = Field(default=64, ge=1, description=(
        "Images one `sample` call of an image model may ask for (`n`), and images one `score-images` "
        "call may send; 422 above."))
    max_prompt_bytes: int = Field(default=16 * 1024, ge=1, description=(
        "UTF-8 bytes of a `generate` prompt or of one text to `score`; 413 above."))
    max_jsonl_line_bytes: int = Field(default=1024 * 1024, ge=1, description=(
        "Longest line of a JSON Lines text dataset, in bytes; a longer line answers 422 naming its number. "
        "Lines are read one at a time, keeping only the subject and text columns."))
    max_jsonl_keys: int = Field(default=64, ge=2, description=(
        "Most distinct keys the lines of a JSON Lines text dataset may use in all; more answer 422."))
    max_new_tokens: int = Field(default=1024, ge=1, description=(
        "Largest `max_new_tokens` of one `generate` call; 422 above."))
    max_inference_flops: int = Field(default=10 * 10**9, ge=1, description=(
        "Work one predict, generate or score call may ask of an inference worker, estimated before it is "
        "sent as 2 × parameters (every shard) × positions (rows, scored or generated tokens with their "
        "context); 422 above, naming the estimate and this limit. Counts alone do not bound a call: long "
        "texts through a large model hold a worker for seconds each. The default is about a second of "
        "one CPU core; raise it for GPU workers."))
    max_image_inference_flops: int = Field(default=4 * 10**11, ge=1, description=(
        "Work one `sample` or `score-images` call of an image model may ask of an inference worker, "
        "estimated the same way (2 × parameters of the networks that draw or score × positions: each image "
        "once per denoising step or scored timestep, in the U-Net's positions per image); 422 above, naming "
        "the estimate and this limit. Image calls have a bound of their own because one image of the default "
        "model costs about 6 GFLOP at 50 steps, over half of `OBLIVIATE_MAX_INFERENCE_FLOPS`: the default "
        "lets the default model draw `OBLIVIATE_MAX_SAMPLES` (64) images at its default steps, about 16 s "
        "of one CPU core. Lower it where calls must stay short; raise it for GPU workers."))
    max_inference_calls_per_client: int = Field(default=2, ge=1, description=(
        "Predict, generate and score calls of one client waiting for an inference worker at once per API "
        "process; the next answers 429 with `Retry-After`. Workers take calls first come, first served, so "
        "without a bound one client's burst queues ahead of every other client's calls until they time out."))
    device: str = Field(default="auto", description="`auto`, `cpu` or `cuda[:i]` for training and unlearning.")
    torch_threads: int = Field(default=0, description=(
        "Intra-op threads of torch in workers (0: torch's default, all cores). On a CPU host shared with "
        "other processes, 1 avoids oversubscription that slows small networks tenfold."))
    job_lease_seconds: int = Field(default=120, description="Lease a worker holds on a job while it renews it.")
    job_max_attempts: int = Field(default=5, description="Attempts before a job fails.")
    max_active_jobs_per_client: int = Field(default=8, description=(
        "Queued or running training and unlearning jobs one client may have (the service's own "
        "`references` and `rehearsal` jobs do not count)."))
    job_max_lost_leases: int = Field(default=2, ge=1, description=(
        "Attempts of one job whose worker died without a heartbeat (lease expired, most often a kill for "
        "memory) before the job fails with \"worker died, likely out of memory\" instead of being retried."))
    sweep_interval_seconds: float = Field(default=15.0, description=(
        "How often beat re-queues jobs whose lease expired and finishes pending artifact deletions."))

    # Unlearning.
    batch_window_seconds: float = Field(default=60.0, description=(
        "Approved requests are coalesced per model within this window."))
    deadline_margin_hours: float = Field(default=72.0, description=(
        "A batch never waits past a request's `due_at` minus this margin."))
    small_model_rows: int = Field(default=200_000, description=(
        "Up to this many training rows, models are retrained exactly."))
    max_remediation_fraction: float = Field(default=0.2, gt=0, le=1, description=(
        "A remediation request whose slice is more than this fraction of a dataset version's records is refused "
        "(with the figures) unless it sets `override_fraction` (docs/remediation.md)."))
    max_record_ids_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description=(
        "Largest file of record ids for a remediation request (`POST /v1/remediation-requests/upload`); 413 above."))
    max_record_ids: int = Field(default=1_000_000, gt=0, description=(
        "Most record ids in a remediation request's file of record ids; 422 above."))
    approximate_method: str = Field(default="finetune", description=(
        "Method used for larger models (escalates to exact if verification fails); a language model whose "
        "family does not support it uses its first approximate method (`gradient_difference`)."))
    verification_alpha: float = Field(default=0.05, gt=0, lt=0.5, description=(
        "Every verdict is a test at level α (`workers/engine/verification/verdicts.py`): intervals at 1 − 2α, each end a "
        "one-sided 1 − α bound. A check passes when its interval lies within its tolerance, fails when it "
        "lies beyond, and is inconclusive otherwise."))
    # Without reference models the gap is judged against the holdout: a retrain never saw the
    # forget subjects, so its expected forget accuracy is the holdout's, and the tolerance is the
    # benchmark's false-pass bound of 5 points (bench/verification.py `FALSE_PASS`). It was 0.15,
    # wide enough to certify a result 10 points from what a retrain would score.
    tolerance_forget_gap: float = Field(default=0.05, ge=0, le=1, description=(
        "Tolerance on |forget accuracy − holdout accuracy| (fraction: 0.05 = 5 points), for models without "
        "reference models. At most 0.05: a retrain's expected forget accuracy is the holdout's, and an "
        "approximate result certified within it is within 5 points of that."))
    # The calibrated gap and the utility drop are held within the bounds the benchmark calls a
    # false pass (bench/verification.py `FALSE_PASS`: 5 points of forget accuracy, 2 of test
    # accuracy): wider, and a certified result could be as far from a retrain as that.
    tolerance_reference_gap: float = Field(default=0.05, ge=0, le=1, description=(
        "Tolerance on the same gap calibrated record by record by the reference models (a difference in "
        "differences, far less noisy). At most 0.05: an approximate result certified within it is within "
        "5 points of forget accuracy of what the references expect of a model that never saw the records."))
    tolerance_mia_auc: float = Field(default=0.10, ge=0, le=0.5, description=(
        "Tolerance on |AUC − 0.5| of the loss-threshold membership attack, forget against holdout records."))
    tolerance_audit: float = Field(default=0.15, ge=0, le=1, description=(
        "Tolerance on the per-record audit's advantage TPR − FPR against reference models or SISA shards."))
    tolerance_holdout_drop: float = Field(default=0.02, ge=0, le=1, description=(
        "Tolerance on the holdout accuracy lost against the version before (paired on the same records). "
        "An approximate result is certified only when the drop's interval lies within it (2 points by "
        "default); an exact one's drop is only noted (a sanity check of lineage, not of the price)."))
    tolerance_extraction: float = Field(default=0.05, ge=0, le=1, description=(
        "Language models: tolerance on the share of forget records extracted verbatim less the held-out "
        "share (one-sided)."))
    audit_record_level: float = Field(default=0.05, gt=0, lt=0.5, description=(
        "Per-record level q at which the audit counts its TPR and FPR."))
    audit_delta: float = Field(default=0.0, ge=0, lt=1, description="δ of the audit's ε lower bound.")
    audit_references: int = Field(default=8, ge=0, le=64, description=(
        "Reference models K kept per model whose unlearning method is approximate, set or chosen "
        "(even; 0: none)."))
    reference_refill_delay_seconds: float = Field(default=300.0, ge=0, description=(
        "An erasure destroys the references that held its subjects; the job that trains their replacements "
        "waits this long, so the unlearning jobs of the same window go first."))
    rehearsal: bool = Field(default=True, description=(
        "Rehearse an erasure after training every model whose unlearning method is approximate "
        "(`workers/rehearsal.py`): erase random trained subjects in memory, retrain without them and compare "
        "each approximate method's result with that retrain; jobs then start with the settings that passed."))
    rehearsal_subjects: int = Field(default=25, ge=1, le=1000, description=(
        "Random trained subjects each draw of a rehearsal erases in memory."))
    rehearsal_draws: int = Field(default=3, ge=3, le=20, description=(
        "Independent draws of subjects a rehearsal erases, one after the other; candidates are ranked by the share "
        "of draws they pass, so that no single lucky draw picks the method (at least 3)."))
    rehearsal_retrain_seeds: int = Field(default=2, ge=2, le=10, description=(
        "Retrains per draw, each under its own training seed: their spread is the noise a candidate's gap to them "
        "is judged against (TOST; at least 2)."))
    rehearsal_delay_seconds: float = Field(default=300.0, ge=0, description=(
        "How long the rehearsal job waits after training, so erasures and training go first."))
    max_forget_holdout_gap: float | None = Field(default=None, description=(
        "**Deprecated**: when set, replaces `tolerance_forget_gap` and `tolerance_reference_gap`, so an "
        "older deployment keeps its policy."))
    max_mia_auc: float | None = Field(default=None, description=(
        "**Deprecated**: when set, `max_mia_auc − 0.5` replaces `tolerance_mia_auc`."))
    max_holdout_drop: float | None = Field(default=None, description=(
        "**Deprecated**: when set, replaces `tolerance_holdout_drop`."))
    plan_interval_seconds: float = Field(default=5.0, description=(
        "How often beat plans approved requests and delivers webhooks."))
    signing_key_path: str = Field(default="", description=(
        "The service key: it signs audit checkpoints, and certificates of erasure until the first "
        "`obliviate signing-key rotate` (then the newest rotated key signs them; app/certificates/keys.py). "
        "Every API and worker process must read the same file. Empty: `<data_dir>/signing_key.pem`."))
    signing_key_dir: str = Field(default="", description=(
        "Folder of the certificate signing keys made by `obliviate signing-key rotate`, one `<key id>.pem` "
        "each, readable by every API and worker process like the signing key. Empty: `<data_dir>/signing_keys`."))
    # Audit anchoring.
    checkpoint_dir: str = Field(default="", description=(
        "Folder or fsspec URL where signed audit checkpoints are also written, outside the database, so that "
        "someone who can rewrite the database cannot also rewrite the checkpoints an auditor compares with. "
        "Empty: `<artifacts_url>/checkpoints`."))
    erasure_log_dir: str = Field(default="", description=(
        "Folder or fsspec URL of the erasure log: one signed entry per completed erasure request (its "
        "client and pseudonymised subject keys, never raw identifiers), which `obliviate restore-check` "
        "re-applies to a database restored from a backup. Keep it where a restore does not roll it back. "
        "Empty: `<artifacts_url>/erasure-log`."))
    checkpoint_interval_seconds: float = Field(default=30.0, gt=0, le=60, description=(
        "How often beat signs a checkpoint over new audit events (at most 60 s, the promised bound)."))
    checkpoint_origin: str = Field(default="", description=(
        "The checkpoints' origin line and key name; keep it stable. Empty: `obliviate/audit/<signing key id>`."))
    db_service_role: str = Field(default="", description=(
        "PostgreSQL: the role the API, workers and beat log in as. When set, `obliviate db upgrade` (run as "
        "the tables' owner) grants it only the row access it needs, so it cannot drop triggers."))
    webhook_max_attempts: int = Field(default=6, description="Deliveries tried per webhook.")
    webhook_allow_http: bool = Field(default=False, description=(
        "Also accept plain `http` callback URLs (https only otherwise): a test or an internal receiver."))
    webhook_allow_networks: list[str] = Field(default=[], description=(
        "JSON list of CIDR networks webhooks may reach although internal, e.g. `[\"10.1.2.0/24\"]`. "
        "Otherwise webhooks never go to loopback, private, link-local, multicast or reserved addresses."))
    webhook_allow_hosts: list[str] = Field(default=[], description=(
        "JSON list of host names exempt from the address checks (the operator vouches for what they "
        "resolve to)."))
    worker_restart_backoff_seconds: float = Field(default=1.0, description=(
        "`obliviate serve`: first delay before a dead worker is replaced; doubles while it keeps dying "
        "soon (at most 60 s), so a worker that cannot start does not spin."))

    # Admin dashboard (/admin).
    dashboard_idle_seconds: int = Field(default=30 * 60, description=(
        "A dashboard session ends after this long without a page view."))
    dashboard_session_seconds: int = Field(default=12 * 3600, description=(
        "A dashboard session ends after this long in any case, however active."))
    dashboard_login_attempts: int = Field(default=10, description=(
        "Failed sign-ins per key (named by its prefix) or, for any other attempt, per client address within "
        "the window before the form answers 429."))
    dashboard_login_window_seconds: int = Field(default=15 * 60, description=(
        "The window of `dashboard_login_attempts`."))
    trusted_proxies: str = Field(default="", description=(
        "Addresses or CIDR networks (comma-separated) whose `X-Forwarded-For` is believed, everywhere: "
        "uvicorn's `forwarded_allow_ips` is set from it. Empty: no proxy is trusted, not even loopback, "
        "and the peer address is the client, whatever the header says."))

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

    def trusted_proxy_networks(self) -> list[str]:
        """trusted_proxies as networks in canonical form (10.0.0.5/8 becomes 10.0.0.0/8), as
        uvicorn's forwarded_allow_ips reads them; empty: trust no proxy, loopback included."""
        return [str(ipaddress.ip_network(item.strip(), strict=False)) for item in self.trusted_proxies.split(",") if item.strip()]

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
