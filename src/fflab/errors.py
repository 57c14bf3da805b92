"""Exceptions fflab raises for bad input. The CLI prints them as one clear line (no traceback)."""


class FFLabError(Exception):
    """Base class: a problem with the user's input, data or environment, not a bug."""


class ConfigError(FFLabError, ValueError):
    """Unknown or ill-typed configuration key or value."""


class DataError(FFLabError):
    """A dataset could not be found, fetched, or failed its integrity check."""


class CheckpointError(FFLabError):
    """A run folder or checkpoint is missing, incomplete or inconsistent."""


class TrainingDiverged(FFLabError):
    """The loss became NaN or infinite, or grew by many orders of magnitude."""


class SlowDtypeWarning(UserWarning):
    """The chosen dtype runs far slower on this machine than float32 (e.g. bf16 on a CPU without
    native bf16 products)."""
