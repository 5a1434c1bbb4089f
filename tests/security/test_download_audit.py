"""Issue 20, item 19: a download of weights is a copy the service can no longer erase. Each one
is an audit event (who, which version, which hash), and `app.audit.downloads.copies` answers,
for a set of model and dataset versions, the copies downloaded before a given time."""

from __future__ import annotations

import uuid

from tests.objects import create_dataset, import_model

SCOPES = "models:write,models:read"


def _copies(**query):
    from app.audit import downloads
    from app.db import session_scope

    with session_scope() as session:
        return downloads.copies(session, **query)


def test_every_weights_download_is_audited_and_listed_per_version(client, make_key):
    from app.audit import downloads
    from app.audit import service as audit_service
    from app.db import session_scope, utcnow

    owner = make_key(SCOPES, client="alpha")
    reader = make_key("models:read", client="alpha")
    model = import_model(client, owner, create_dataset(client, owner)["id"], name="copied")
    model_id = uuid.UUID(model["id"])
    assert _copies(model_versions=[(model_id, 1)]) == []

    first = client.get("/v1/models/copied/versions/1/weights", headers=owner)
    assert first.status_code == 200, first.text
    between = utcnow()
    second = client.get("/v1/models/copied/versions/1/weights", headers=reader)
    assert second.status_code == 200, second.text
    sha = first.headers["X-Content-SHA256"]

    found = _copies(model_versions=[(model_id, 1)])
    assert [(c.kind, c.owner_id, c.version, c.artifact, c.sha256, c.client) for c in found] == [
        ("model", model_id, 1, "weights", sha, "alpha")] * 2
    assert found[0].key_id != found[1].key_id  # who: each key, in download order
    assert found[0].at < between <= found[1].at
    assert [c.key_id for c in _copies(model_versions=[(model_id, 1)], before=between)] == [found[0].key_id]
    assert _copies(model_versions=[(model_id, 2)]) == []
    assert _copies(model_versions=[(uuid.uuid4(), 1)], dataset_versions=[(model_id, 1)]) == []
    with session_scope() as session:
        assert audit_service.verify_stream(session, downloads.stream("model", model_id)).valid


def test_a_refused_download_leaves_no_event(client, make_key):
    from app.db import session_scope, utcnow
    from app.models.models import ModelVersion

    owner = make_key(SCOPES, client="alpha")
    model = import_model(client, owner, create_dataset(client, owner)["id"], name="gone")
    with session_scope() as session:
        version = session.query(ModelVersion).filter_by(model_id=uuid.UUID(model["id"]), version=1).one()
        version.destroyed_at = utcnow()
    assert client.get("/v1/models/gone/versions/1/weights", headers=owner).status_code == 410
    assert client.get("/v1/models/gone/versions/1/weights", headers=make_key("requests:read", client="alpha")).status_code == 403
    assert _copies(model_versions=[(uuid.UUID(model["id"]), 1)]) == []
