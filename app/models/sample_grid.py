"""An image model's grid of samples: images drawn by the inference worker, laid out in one PNG,
stored as an artifact linked to the model version (`ModelVersion.sample_grid_sha256`) and shown on
the dashboard's model page.

The grid is generated from the version's weights, so it is part of what an erasure destroys: it
is among the version's artifacts (`app.models.service.version_artifacts`), and its bytes go with
the weights when the version is destroyed. Flushes only; the caller commits.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math

from PIL import Image
from sqlalchemy.orm import Session

from app.artifacts import service as artifact_service
from app.artifacts.store import ArtifactStore, get_store
from app.errors import Conflict
from app.models.models import ModelVersion

# Images per grid, their seed, and the gap between them in pixels.
GRID_IMAGES = 16
GRID_SEED = 0
GAP = 2


def compose(images: list[str]) -> bytes:
    """One PNG of the base64 PNG images in rows of √n, on a white background."""
    tiles = []
    for text in images:
        with Image.open(io.BytesIO(base64.b64decode(text)), formats=("PNG",)) as tile:
            tiles.append(tile.convert("RGB"))
    if not tiles:
        raise Conflict("The worker drew no samples.")
    width, height = tiles[0].size
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    grid = Image.new("RGB", (columns * (width + GAP) + GAP, rows * (height + GAP) + GAP), "white")
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        grid.paste(tile, (GAP + column * (width + GAP), GAP + row * (height + GAP)))
    out = io.BytesIO()
    grid.save(out, format="PNG")
    return out.getvalue()


def attach(session: Session, version: ModelVersion, png: bytes, live: artifact_service.LiveReferences, *,
           store: ArtifactStore | None = None) -> str | None:
    """Store the grid and link it to the version; answers the grid it replaces (whose bytes the
    caller schedules for deletion once nothing references them), or None. `live` is the
    liveness query of every table (app.unlearning.service.live_references): new bytes are
    discarded if this transaction rolls back."""
    if version.destroyed_at is not None:
        raise Conflict("This version's weights were destroyed; it has no samples.")
    store = store or get_store()
    sha = hashlib.sha256(png).hexdigest()
    artifact_service.hold(session, [sha])
    if not store.exists(sha):
        store.put_bytes(png)
        artifact_service.discard_after_rollback(session, [sha], live)
    previous = version.sample_grid_sha256
    version.sample_grid_sha256 = sha
    session.flush()
    return previous if previous not in (None, sha) else None
