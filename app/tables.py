"""Imports every table module, so Base.metadata is complete for Alembic and tests."""

from app.artifacts import models as artifact_models  # noqa: F401
from app.audit import models as audit_models  # noqa: F401
from app.certificates import models as certificate_models  # noqa: F401
from app.dashboard import models as dashboard_models  # noqa: F401
from app.datasets import models as dataset_models  # noqa: F401
from app.db import Base
from app.idempotency import models as idempotency_models  # noqa: F401
from app.identities import models as identity_models  # noqa: F401
from app.jobs import models as job_models  # noqa: F401
from app.keys import models as key_models  # noqa: F401
from app.models import models as model_models  # noqa: F401
from app.remediation import models as remediation_models  # noqa: F401
from app.requests import models as request_models  # noqa: F401
from app.webhooks import models as webhook_models  # noqa: F401

metadata = Base.metadata
