"""User-facing errors.

Every error a user can cause (bad config, bad data, unreachable database, unknown model) is raised as a
:class:`RetrainError` whose message says what is wrong *and what to do about it*. The CLI prints the message
alone (no traceback) and exits non-zero; Dagster shows it as the step failure.
"""


class RetrainError(Exception):
    """An error the user can fix; the message names the problem and the fix."""


class ConfigError(RetrainError):
    """The configuration file is missing or invalid."""


class DataError(RetrainError):
    """Input data is unusable (empty window, missing column, malformed values...)."""


class StoreError(RetrainError):
    """The monitoring store or artifact store cannot be used (unreachable, corrupt artifact...)."""


class RetrainInFlight(RetrainError):
    """A retrain of this model is already claimed (queued or running): the request would duplicate it."""
