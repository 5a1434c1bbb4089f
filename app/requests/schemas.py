from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AnyHttpUrl, AwareDatetime, BaseModel, Field, field_validator, model_validator

from app.pii import find_identifier, reveals
from app.pseudonym import redact
from app.requests import regimes
from app.schemas import StrictModel, Subject, example
from app.webhooks.addresses import AddressRefused, check_url


def _known_regime(code: str) -> str:
    regimes.regime(code)  # an unknown code answers 422 with the supported list
    return code


# A code of app/requests/regimes.py; the schema lists them as an enum.
Jurisdiction = Annotated[str, AfterValidator(_known_regime), Field(json_schema_extra={"enum": list(regimes.SUPPORTED)})]
Source = Literal["portal", "admin", "batch"]
Status = Literal[
    "received", "approved", "needs_review", "on_hold", "denied", "cancelled",
    "scheduled", "processing", "verifying", "completed", "failed",
]


VerificationStatus = Literal["unverified", "verified", "failed"]
VerificationMethod = Literal["portal", "document", "other"]


class IdentityVerification(StrictModel):
    """How far the requester's identity is verified (docs/identity-resolution.md)."""

    model_config = example({"status": "verified", "method": "portal"})

    status: VerificationStatus
    method: VerificationMethod | None = Field(default=None, description="How; required unless `unverified`.")
    at: AwareDatetime | None = Field(default=None, description="When; now if left out.")

    @model_validator(mode="after")
    def _method_when_decided(self) -> "IdentityVerification":
        if self.status != "unverified" and self.method is None:
            raise ValueError(f"a {self.status} identity needs its method (portal, document or other)")
        if self.at is not None and self.at > datetime.now(UTC) + timedelta(minutes=5):
            raise ValueError("at is in the future")
        return self


class ErasureRequestCreate(StrictModel):
    model_config = example({
        "subject": {"identifiers": {"email": "jane@example.org"}}, "jurisdiction": "gdpr", "source": "portal",
        "external_id": "ticket-1234",
    })

    subject: Subject
    jurisdiction: Jurisdiction
    source: Source
    external_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
    identity_verification: IdentityVerification | None = Field(default=None, description=(
        "The requester's verification; unverified if left out."))
    identity_verified: bool = Field(default=False, json_schema_extra={"deprecated": True}, description=(
        "Deprecated: `true` is `identity_verification: {status: verified, method: other}`."))
    reason: str | None = Field(default=None, max_length=2000)
    callback_url: AnyHttpUrl | None = Field(default=None)

    @model_validator(mode="after")
    def _one_verification(self) -> "ErasureRequestCreate":
        given = self.identity_verification
        if self.identity_verified and given is not None and given.status != "verified":
            raise ValueError("identity_verified (deprecated) contradicts identity_verification; send only the latter")
        return self

    @property
    def verification(self) -> IdentityVerification:
        """The requester's verification, from either field."""
        if self.identity_verification is not None:
            return self.identity_verification
        if self.identity_verified:
            return IdentityVerification(status="verified", method="other")
        return IdentityVerification(status="unverified")

    @field_validator("external_id")
    @classmethod
    def _external_id_is_no_identifier(cls, value: str | None) -> str | None:
        # It is stored, listed, audited and sent in webhooks: it must not be the person's address.
        kind = find_identifier(value)
        if kind is not None:
            raise ValueError(f"external_id looks like {'an e-mail address' if kind == 'email' else 'a phone number'}; "
                             "use the portal's own reference instead")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback_allowed(cls, value):
        if value is None:
            return value
        if len(str(value)) > 2000:
            raise ValueError("callback_url is longer than 2000 characters")
        try:
            check_url(str(value))
        except AddressRefused as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _reason_names_nobody(self) -> "ErasureRequestCreate":
        """The request's own identifiers are redacted from the reason (as before); anything that
        still reads as an identifier, or as one of them written in disguise, is refused."""
        identifiers = self.subject.identifiers
        # Redaction only removes text, so a reason that reveals nothing needs no redacting here.
        if self.reason is not None and reveals(self.reason, identifiers.values()):
            if reveals(redact(self.reason, identifiers) or "", identifiers.values()):
                raise ValueError(REASON_REFUSED)
        return self


REASON_REFUSED = "reason seems to contain a personal identifier (an e-mail address, phone number or the subject's identifier); leave it out"


def _free_text_names_nobody(value: str | None) -> str | None:
    if find_identifier(value):
        raise ValueError("reason must not contain personal identifiers (an e-mail address or phone number)")
    return value


class ReasonBody(StrictModel):
    model_config = example({"reason": "The requester's identity could not be verified."})

    reason: str = Field(min_length=1, max_length=2000)

    _check = field_validator("reason")(_free_text_names_nobody)


class DenyBody(ReasonBody):
    model_config = example({"reason": "The requester's identity could not be verified.", "ground": "identity_unverified"})

    # Checked against the request's regime, which lists the grounds it allows.
    ground: str | None = Field(default=None, max_length=40)


class ApproveBody(StrictModel):
    model_config = example({"reason": "Identity checked by the privacy team."})

    reason: str | None = Field(default=None, max_length=2000)
    override_reason: str | None = Field(default=None, min_length=1, max_length=2000, description=(
        "Required to approve a request whose requester is not verified; audited."))

    _check = field_validator("reason", "override_reason")(_free_text_names_nobody)


class OptionalReasonBody(StrictModel):
    model_config = example({"reason": "Identity checked by the privacy team."})

    reason: str | None = Field(default=None, max_length=2000)

    _check = field_validator("reason")(_free_text_names_nobody)


class ExtendBody(StrictModel):
    model_config = example({"days": 30, "reason": "The data sits in three systems; the request is complex."})

    reason: str = Field(min_length=1, max_length=2000)
    # The regime of the request may allow less, or none (app/requests/regimes.py).
    days: int = Field(ge=1, le=regimes.LONGEST_EXTENSION_DAYS)

    _check = field_validator("reason")(_free_text_names_nobody)


class CheckedOut(BaseModel):
    type: Literal["dataset", "model"]
    id: uuid.UUID
    name: str
    version: int = Field(description="The current version when the request was planned.")
    held: bool = Field(description="Whether it held the person.")


class SearchedOut(BaseModel):
    """What planning the request searched (docs/identity-resolution.md)."""

    kinds: list[str] = Field(description="The identifier kinds the request named.")
    resolved_kinds: list[str] = Field(default_factory=list, description=(
        "Every kind searched: the request's own and those its identifiers are linked to."))
    subjects: int = Field(description="How many subject keys its identifiers resolved to, through links.")
    checked: list[CheckedOut] = Field(description="Every dataset and model of the client looked in.")
    at: datetime = Field(description="When planning searched.")


class IdentityVerificationOut(BaseModel):
    status: VerificationStatus
    method: VerificationMethod | None
    at: datetime | None


class ErasureRequestOut(BaseModel):
    id: uuid.UUID
    status: Status
    jurisdiction: Jurisdiction
    source: Source
    external_id: str | None
    identity_verification: IdentityVerificationOut
    identity_verified: bool = Field(json_schema_extra={"deprecated": True}, description=(
        "Deprecated: whether `identity_verification.status` is `verified`."))
    received_at: datetime
    due_at: datetime
    days_left: int
    extended_days: int | None
    reason: str | None
    status_reason: str | None
    decided_at: datetime | None
    completed_at: datetime | None
    outcome: str | None
    progress: dict[str, Any] | None
    updated_at: datetime
    searched: SearchedOut | None = Field(default=None, description=(
        "What planning searched (on GET of one request, once planned); null before."))


class ErasureRequestPage(BaseModel):
    items: list[ErasureRequestOut]
    next_cursor: str | None


class BatchItemResult(BaseModel):
    index: int
    # created | existing | error
    result: Literal["created", "existing", "error"]
    status: int
    request: ErasureRequestOut | None = None
    problem: dict[str, Any] | None = None


class BatchResponse(BaseModel):
    items: list[BatchItemResult]
    created: int
    existing: int
    errors: int


class AuditEventOut(BaseModel):
    seq: int
    type: str
    at: datetime
    actor: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


class AuditTrail(BaseModel):
    request_id: uuid.UUID
    events: list[AuditEventOut]
    chain_valid: bool
    head: str
    problem: str | None = None
