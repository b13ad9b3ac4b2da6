"""Every error batchrun raises, in one tree.

    BatchrunError
    ├── JobError                 the job file (or a dataset) is broken; carries every Problem found
    ├── ConfigError              a bad combination of options or environment (missing key, unknown model)
    ├── LockHeld                 another run is writing the same output file
    ├── ResultsError             a results file cannot be read, or files from different jobs were mixed
    ├── OutputFailed             writing results or a summary failed once requests may have been sent
    ├── CacheError               the response cache cannot be used (a run goes on without it)
    └── RequestFailed            one chat request failed; `kind`, `http_status`, `retry_after`,
        │                        and what OpenRouter said: `error_type`, `availability_code`
        ├── Transient            worth another attempt
        │   ├── RateLimited      a 429 (or overload) with the server's wait, if it gave one
        │   └── Undecodable      a body that does not decode: a 200's was generated, so may be billed
        └── Permanent            another attempt cannot succeed
            ├── Rejected         final for the row: bad request, moderation, guardrail...
            │   └── ResponseTooLarge  the reply passed run.max_response_bytes (after decompression)
            ├── ModelUnavailable final for the model: an availability code such as model_not_found
            ├── DailyCapReached  final for the model: a platform limit that resets past the run's horizon
            ├── AuthFailed       final for the run: the key is missing, wrong or expired
            └── CreditExhausted  final for the run: the key's limit or the account's credits are gone

The HTTP client translates httpx and aiohttp errors into this tree at its boundary, so
nothing above it sees a transport exception. The runner turns a Permanent error into an
`error` row and carries on; only AuthFailed and CreditExhausted end the run, and
ModelUnavailable and DailyCapReached skip the rest of that model (or, for a `:free`
model's daily cap, of every `:free` model).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._scrub import hide_keys


class BatchrunError(Exception):
    """Root of every error batchrun raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a job file: where it is and what is wrong."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        at = f" at {self.path}" if self.path else ""
        # Every check's message, the file's name and the path: a key-like text a job or a
        # dataset holds is echoed by a regex's, a schema's or a missing file's error (break20 F7).
        return hide_keys(f"{where}:{at} {self.message}" if at else f"{where}: {self.message}")


class JobError(BatchrunError):
    """The job file cannot be used; `problems` lists all that was found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        # Each said once: a dataset shared by three prompts was "does not exist" three times,
        # at one line (verify21 V6).
        lines = {str(p): p for p in reversed(problems)}
        self.problems = [lines[text] for text in dict.fromkeys(str(p) for p in problems)]
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(BatchrunError):
    """Options, environment or endpoint do not fit together; nothing was spent."""


class SharedOutput(ConfigError):
    """The output is the file this process's standard output or error goes to. `on_stderr`:
    stderr is that file too, so saying so there would write into it (verify40 F2)."""

    def __init__(self, message: str, on_stderr: bool) -> None:
        super().__init__(message)
        self.on_stderr = on_stderr


class LockHeld(BatchrunError):
    """Another live batchrun process holds the lock on this output file."""


class ResultsError(BatchrunError):
    """A results file is unreadable, or files of different jobs were combined."""


class OutputFailed(BatchrunError):
    """Results or a summary could not be written (a full disk, a size limit, a deleted file).

    Unlike an output refused before the run (a ConfigError, nothing spent), this can come
    after money was spent, so it has an exit code of its own; a disk with no room is this
    even before anything is sent (the machine's trouble, not the job's).
    """


class CacheError(BatchrunError):
    """The response cache is unusable: corrupt, locked, unwritable. A run warns and goes on
    without it; only the `cache` commands report it as an error."""


class NotSent(BatchrunError):
    """Internal signal: the run stopped while this attempt waited for its turn (a slot, a
    cooldown, a pace, a retry's wait), so it never went out. Never leaves the run."""


class RequestFailed(BatchrunError):
    """One request failed. `kind` is a short stable word used in result rows.

    `maybe_billed` marks a failure after which OpenRouter may still charge the attempt: a
    non-streamed request the client gave up on (timeout, cut body) can complete and be
    billed (api_reference/streaming.mdx, "Stream cancellation"). `generation_id` is the
    attempt's id when its headers arrived (X-Generation-Id), so its cost can be looked up.
    """

    maybe_billed: bool = False
    generation_id: str | None = None
    # usage.cost of a 200 reply that is a failure all the same: charged, not released
    # (zero-completion-insurance.mdx: auxiliary charges "appear in the request's usage").
    reported_cost: float | None = None

    def __init__(
        self,
        kind: str,
        message: str,
        http_status: int | None = None,
        retry_after: float | None = None,
        *,
        error_type: str | None = None,
        availability_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.http_status = http_status
        self.retry_after = retry_after
        # errors-and-debugging.mdx: the typed `error_type` and `error.availability.code`.
        self.error_type = error_type
        self.availability_code = availability_code

    @property
    def retryable(self) -> bool:
        return isinstance(self, Transient)

    @property
    def may_have_acted(self) -> bool:
        """Whether what the request asked for (a key, a batch) may exist all the same: no answer, a
        5xx, a 2xx not read, or a 4xx that refuses nothing: a proxy's 408 or 499 while the upstream
        acted, a 409 or 425 (verify32 n7; out-100 F2: a batch created behind a 408 was bought twice)."""
        status = self.http_status
        return status is None or status >= 500 or 200 <= status < 300 or status in (408, 409, 425, 499)


class Transient(RequestFailed):
    """Another attempt may succeed: network trouble, 5xx, timeouts."""


class Undecodable(Transient):
    """A reply's body that does not decode: a content-encoding batchrun does not read, or one
    that is broken. A 200's was generated all the same, so it may be billed (break45 F4)."""


class RateLimited(Transient):
    """The provider asked us to slow down; `retry_after` is its wait in seconds, if given.

    `limit_wait` is when the limit itself has room again (X-RateLimit-Reset), which may be
    sooner than `retry_after`; `limit_count` is X-RateLimit-Limit; `platform` is true for
    OpenRouter's own limits (they carry X-RateLimit-* headers, limits.mdx), false for an
    upstream provider's; `paces` is true when the answer says we sent too fast (not that
    every provider is at capacity)."""

    limit_wait: float | None = None
    limit_count: float | None = None
    platform: bool = False
    paces: bool = True


class Permanent(RequestFailed):
    """Another attempt with the same request cannot succeed."""


class Rejected(Permanent):
    """Final for the row only: bad parameters, moderation, unknown model, too large."""


class ResponseTooLarge(Rejected):
    """The reply grew past the cap on response bytes; the same request would do it again."""

    def __init__(
        self, cap: int, http_status: int | None = None, declared: int | None = None, of: str = "run.max_response_bytes"
    ) -> None:
        what = "the reply grew past" if declared is None else f"the reply declared {declared:,} bytes, over"
        super().__init__("response_too_large", f"{what} the {cap:,}-byte cap ({of})", http_status)
        self.declared = declared


class ModelUnavailable(Permanent):
    """Final for the model: OpenRouter says it cannot serve it (`availability.code`)."""


class DailyCapReached(Permanent):
    """Final for the model: a platform request cap whose reset is past the run's horizon."""


class AuthFailed(Permanent):
    """Final for the run: the key was refused."""


class CreditExhausted(Permanent):
    """Final for the run: the key limit or the account credits are used up."""
