"""The legal regimes a request may name, as data: each one's deadline, extension rule and the
grounds on which it lets a controller deny an erasure. Adding a regime is adding a row here; its
code is what requests store in `jurisdiction` (at most 10 characters, the column's width)."""

from __future__ import annotations

from calendar import monthrange
from dataclasses import dataclass
from datetime import datetime, timedelta

# Grounds a denial may name (`ground` in POST .../deny). Each regime allows a subset.
IDENTITY_UNVERIFIED = "identity_unverified"
MANIFESTLY_UNFOUNDED = "manifestly_unfounded"  # unfounded, excessive or repetitive requests
LEGAL_OBLIGATION = "legal_obligation"
LEGAL_CLAIMS = "legal_claims"
FREE_EXPRESSION = "free_expression"
PUBLIC_INTEREST = "public_interest"  # public health, archiving, scientific or statistical research
CONTRACT = "contract"  # completing the transaction or contract the data was collected for
SECURITY = "security"  # detecting security incidents, fraud; debugging
INTERNAL_USES = "internal_uses"  # internal uses the consumer can reasonably expect

_GDPR_GROUNDS = frozenset({IDENTITY_UNVERIFIED, MANIFESTLY_UNFOUNDED, LEGAL_OBLIGATION, LEGAL_CLAIMS,
                           FREE_EXPRESSION, PUBLIC_INTEREST})
_US_STATE_GROUNDS = frozenset({IDENTITY_UNVERIFIED, MANIFESTLY_UNFOUNDED, LEGAL_OBLIGATION, LEGAL_CLAIMS,
                               CONTRACT, SECURITY, INTERNAL_USES})


@dataclass(frozen=True)
class Regime:
    code: str
    name: str
    basis: str  # the law, or its provision, that sets the deadline
    deny_grounds: frozenset[str]
    deadline_days: int = 0
    deadline_months: int = 0  # calendar months (GDPR); used when deadline_days is 0
    # The longest single extension in days; None: the regime allows none. No regime in the table
    # allows more than one extension, and the service refuses a second one.
    extension_days: int | None = None

    def due_at(self, received_at: datetime) -> datetime:
        if self.deadline_months:
            return _months_later(received_at, self.deadline_months)
        return received_at + timedelta(days=self.deadline_days)


def _us_state(code: str, name: str, act: str) -> Regime:
    """The US state privacy laws that answer within 45 days, extendable once by 45 more when
    reasonably necessary."""
    return Regime(code, name, act, _US_STATE_GROUNDS, deadline_days=45, extension_days=45)


_TABLE = (
    # Art. 12(3): one month, extendable by two further months. The extension is bounded at 60
    # days, the bound the service has always applied to GDPR requests.
    Regime("gdpr", "GDPR", "GDPR Art. 12(3)", _GDPR_GROUNDS, deadline_months=1, extension_days=60),
    Regime("uk_gdpr", "UK GDPR", "UK GDPR Art. 12(3)", _GDPR_GROUNDS, deadline_months=1, extension_days=60),
    # CCPA as amended by the CPRA: 45 days, extendable once by 45 days.
    Regime("ccpa", "CCPA/CPRA", "Cal. Civ. Code §1798.130(a)(2)", _US_STATE_GROUNDS | {FREE_EXPRESSION, PUBLIC_INTEREST},
           deadline_days=45, extension_days=45),
    _us_state("vcdpa", "VCDPA (Virginia)", "Virginia Consumer Data Protection Act"),
    _us_state("cpa", "CPA (Colorado)", "Colorado Privacy Act"),
    _us_state("ctdpa", "CTDPA (Connecticut)", "Connecticut Data Privacy Act"),
    _us_state("ucpa", "UCPA (Utah)", "Utah Consumer Privacy Act"),
    _us_state("tdpsa", "TDPSA (Texas)", "Texas Data Privacy and Security Act"),
    _us_state("ocpa", "OCPA (Oregon)", "Oregon Consumer Privacy Act"),
    # Art. 18 §5 leaves the term of an erasure to regulation the ANPD has not issued; Art. 19 II's
    # 15 days (for a full declaration) is the only term the statute sets, with no extension.
    Regime("lgpd", "LGPD (Brazil)", "LGPD Art. 19 II", frozenset({IDENTITY_UNVERIFIED, LEGAL_OBLIGATION,
           PUBLIC_INTEREST, INTERNAL_USES}), deadline_days=15),
    Regime("pipeda", "PIPEDA (Canada)", "PIPEDA s. 8(3)-(4)", frozenset({IDENTITY_UNVERIFIED, LEGAL_OBLIGATION,
           LEGAL_CLAIMS}), deadline_days=30, extension_days=30),
    # Private-sector act s. 32: 30 days, with no extension for the private sector.
    Regime("qc_law25", "Quebec Law 25", "Act respecting the protection of personal information in the private sector, s. 32",
           frozenset({IDENTITY_UNVERIFIED, LEGAL_OBLIGATION, LEGAL_CLAIMS}), deadline_days=30),
    # No law applies: the organisation's own commitment, 30 days, extendable once by 30.
    Regime("voluntary", "Voluntary", "the organisation's own policy", frozenset({IDENTITY_UNVERIFIED,
           MANIFESTLY_UNFOUNDED, LEGAL_OBLIGATION, LEGAL_CLAIMS, CONTRACT, SECURITY}),
           deadline_days=30, extension_days=30),
)
REGIMES: dict[str, Regime] = {regime.code: regime for regime in _TABLE}
SUPPORTED = tuple(REGIMES)
LONGEST_EXTENSION_DAYS = max(regime.extension_days or 0 for regime in _TABLE)


def unknown_regime_message() -> str:
    return f"unknown jurisdiction; supported: {', '.join(SUPPORTED)}"


def regime(code: str) -> Regime:
    try:
        return REGIMES[code]
    except KeyError:
        raise ValueError(unknown_regime_message()) from None


def _months_later(at: datetime, months: int) -> datetime:
    """The same day `months` later, or that month's last day when shorter (31 January → 28 or 29
    February), as dateutil's relativedelta computes it, at a fraction of its cost: intake computes
    it for every request."""
    index = at.month - 1 + months
    year, month = at.year + index // 12, index % 12 + 1
    return at.replace(year=year, month=month, day=min(at.day, monthrange(year, month)[1]))
