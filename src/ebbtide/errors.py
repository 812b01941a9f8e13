"""Every exception and warning ebbtide raises, in one place.

A message says what happened, shows the offending value or line, and says what to do
next. The CLI turns any `EbbtideError` into one line on stderr and exit code 1; other
exceptions are bugs and keep their traceback.
"""

from __future__ import annotations


class EbbtideError(Exception):
    """Base class: a problem the user can fix (bad input, bad option, bad store)."""


class InputFormatError(EbbtideError):
    """The input file is not in the stated format (wrong columns, binary, empty)."""


class StoreError(EbbtideError):
    """The event store cannot do what was asked (locked, wrong mode, corrupt)."""


class ConfigError(EbbtideError, ValueError):
    """A configuration value is out of its allowed range or unknown."""


class PrivacyError(StoreError):
    """Pseudonymisation settings conflict with the store (raw ids into a pseudonymised store)."""


class NotFittedError(EbbtideError):
    """A model was queried before `fit`."""


class UnsupportedQueryError(EbbtideError):
    """This model does not answer that query (e.g. `recommend` for btyd); callers check
    ``query in model.answers`` first, so this only surfaces a caller's mistake."""


class QueryTimeError(EbbtideError):
    """A fitted model was asked about an instant before its cut-off: its parameters know
    events after that instant, so the answer would leak the future."""


class ConvergenceError(EbbtideError):
    """An optimiser failed to converge; the message lists likely causes and fixes."""


class DataQualityWarning(UserWarning):
    """The input was loaded, but something about it deserves a look."""


class ConvergenceWarning(UserWarning):
    """An optimiser stopped early or its answer is doubtful."""


class CampaignLogError(InputFormatError):
    """A campaign log cannot be analysed as asked (missing column, empty arm, no control)."""


class CampaignWarning(UserWarning):
    """A campaign analysis ran, but a number in it deserves caution (small arm, imbalance,
    users unknown to the store, an assumed response model)."""


class AccessError(EbbtideError):
    """The live service refused a request at its API key checks (`ebbtide.serve.security`)."""


class Unauthenticated(AccessError):
    """No API key, or one that is malformed, unknown or revoked (the message never says which)."""


class Forbidden(AccessError):
    """The API key is valid but lacks the scope the request needs."""


class RateLimited(AccessError):
    """The API key has used up its request budget; `retry_after` says for how long, in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
