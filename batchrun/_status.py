"""The words a record and a run end with: a row's status, and why a run stopped early.

StrEnums, so they are the plain strings of the JSONL and the summary (`"ok"`, `"budget"`)
wherever a record is read back, and a misspelt member is a type error where one is written.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """How a row ended (README "Record fields")."""

    OK = "ok"  # answered; its checks were run
    ERROR = "error"  # the request failed (after retries), or `internal` for a bug in that row
    SKIPPED = "skipped"  # never answered: a stop, a model's cap, the budget; a resume sends it again


class StopReason(StrEnum):
    """Why a run stopped early; each maps to its own exit code (_verdict)."""

    AUTH = "auth"  # the key was refused
    CREDITS = "credits"  # the key's limit or the account's credits are used up
    BUDGET = "budget"  # the job's budget (--budget, run.budget_usd) cannot hold the next worst case
    # Under a limit, the key's usage could not be followed (/key failed, or its usage fell or is
    # not a number): costs the answers under-report could not be caught (break14c N7)
    KEY_UNREADABLE = "key_unreadable"
    DEADLINE = "deadline"
    INTERRUPTED = "interrupted"  # SIGINT or SIGTERM
    IO = "io"  # the results file cannot be written: stop at the first failed write
    SUBMITTED = "submitted"  # batch mode: batches still run at OpenRouter; collect them later
