"""The exit-code contract that schedulers (Airflow, cron, CI) act on.

    0  done, or already up to date
    2  bad input or configuration: the same command fails the same way; do not retry, fix it
    1  transient or internal: a network or storage failure, a lost executor, a bug; retry
    3  train only: the promotion gate turned the new version down; LATEST stays (do not retry)

A user error is a `UserError`, a `ValueError` (configuration and input checks raise subclasses of
it), or an `OSError` that names a path the user gave: missing, not permitted, of the wrong kind. Every other
`OSError` is an I/O failure of the moment (a connection refused or reset, a timeout, a store's
5xx), and anything else is a failure of this program, which a retry may or may not cure.
"""

from __future__ import annotations

DONE, RETRY, DO_NOT_RETRY, GATE_REJECTED = 0, 1, 2, 3

_PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


class UserError(Exception):
    """Something only the user can fix (an environment, a master, a setting); rerunning fails alike."""


class PromotionRejected(Exception):
    """The promotion gate turned a new model version down (deepfm/training/promotion.py): it is kept,
    marked rejected, and LATEST stays on the serving version. A verdict, not a failure to retry.
    `trained`: what was committed (the rejected version), for the caller to report."""

    def __init__(self, message: str, trained: object = None) -> None:
        super().__init__(message)
        self.trained = trained


def exit_code(err: BaseException) -> int:
    if isinstance(err, PromotionRejected):
        return GATE_REJECTED
    if isinstance(err, (UserError, ValueError, *_PATH_ERRORS)):
        return DO_NOT_RETRY
    # Spark's analysis of a query fails on what the user named (a path that does not exist, a
    # column a table lacks), before any data is read: never transient. Matched by name so that
    # this module does not import pyspark.
    if any(cls.__name__ == "AnalysisException" for cls in type(err).__mro__):
        return DO_NOT_RETRY
    return RETRY


def first_line(err: BaseException) -> str:
    """The message's first line (a Java exception's message is its whole stack), or the error's type."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def is_expected(err: BaseException) -> bool:
    """Whether the error's own message says all a user needs (no traceback): user errors and I/O."""
    return exit_code(err) in (DO_NOT_RETRY, GATE_REJECTED) or isinstance(err, OSError)
