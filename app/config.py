"""Settings, read from the environment with the prefix OBLIVIATE_."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that must never protect real pseudonyms; refused outside the embedded default.
WEAK_SECRETS = {"", "change-me", "changeme", "secret", "obliviate"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OBLIVIATE_", extra="ignore")

    data_dir: Path = Path("./.obliviate")
    # Empty means the embedded default: a SQLite file and a SQLite-backed broker under data_dir.
    database_url: str = ""
    broker_url: str = ""
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
    log_level: str = "INFO"

    # Data and models (datasets, training).
    max_upload_bytes: int = 256 * 1024 * 1024
    max_predict_rows: int = 10_000
    device: str = "auto"
    # Intra-op threads of torch in workers; 0 keeps torch's default (all cores). On a CPU host
    # shared with other processes, 1 avoids oversubscription that slows small networks tenfold.
    torch_threads: int = 0
    job_lease_seconds: int = 120
    job_max_attempts: int = 5
    max_active_jobs_per_client: int = 8
    # Beat period of the lease sweeper and of the sweeper that finishes pending artifact deletions.
    sweep_interval_seconds: float = 15.0

    # Unlearning.
    batch_window_seconds: float = 60.0
    deadline_margin_hours: float = 72.0
    small_model_rows: int = 200_000
    approximate_method: str = "finetune"
    # Verification policy for approximate methods (fractions: 0.03 = 3 points).
    max_forget_holdout_gap: float = 0.03
    max_mia_auc: float = 0.55
    max_holdout_drop: float = 0.01
    plan_interval_seconds: float = 5.0
    signing_key_path: str = ""
    webhook_max_attempts: int = 6

    @property
    def embedded(self) -> bool:
        return self.database_url == "" or self.database_url.startswith("sqlite")

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'obliviate.db').resolve()}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"
        if not self.artifacts_url:
            self.artifacts_url = str((self.data_dir / "artifacts").resolve())
        return self

    def resolved_secret_key(self) -> bytes:
        if self.secret_key and self.secret_key not in WEAK_SECRETS:
            return self.secret_key.encode()
        if not self.embedded:
            raise RuntimeError(
                "OBLIVIATE_SECRET_KEY must be set to a strong random value when using an external "
                "database (it keys every subject pseudonym)."
            )
        return _embedded_secret(self.data_dir)


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
