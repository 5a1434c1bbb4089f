"""Fixtures shared by the remediation tests: the second key that approves (four eyes), and a
dataset whose slices the requests select."""

from __future__ import annotations

import pytest

from tests.dataset_files import SLICE_METADATA, parquet_bytes, poisoned_digits, upload


@pytest.fixture
def reviewer(make_key):
    """A second key of the same client: the four eyes that approve."""
    return make_key("requests:review,requests:read,models:read", client="acme")


@pytest.fixture
def dataset(client, writer) -> str:
    created = upload(client, writer, parquet_bytes(poisoned_digits(subjects=100)), name="sliced", **SLICE_METADATA)
    assert created.status_code == 201, created.text
    return created.json()["dataset_id"]
