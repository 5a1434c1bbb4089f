from __future__ import annotations

from pydantic import BaseModel


class BrokenChain(BaseModel):
    stream: str
    seq: int | None
    problem: str | None


class LogSummary(BaseModel):
    valid: bool
    tree_size: int
    unsequenced: int
    checkpoints: int
    latest_checkpoint: int | None
    certificates: int
    unanchored_certificates: int
    problems: list[str]


class VerifyReport(BaseModel):
    valid: bool
    chains: int
    events: int
    broken: list[BrokenChain]
    first_broken: BrokenChain | None
    log: LogSummary
