"""Exceptions that the command line reports as a plain message, without a traceback.

Every error that a user can cause with a file, a recipe or a command-line value
derives from `CondgenError`. Its message states what is wrong, on which value, file
or record, and what to do about it.
"""


class CondgenError(Exception):
    """Base class of all user-facing errors."""


class DataError(CondgenError):
    """A data file or folder is missing, unreadable or not in the expected format."""


class RecipeError(CondgenError):
    """A recipe or a command-line override is invalid."""


class LabelError(CondgenError):
    """A label value is not in the model's vocabulary or valid range."""


class CheckpointError(CondgenError):
    """A checkpoint is missing, corrupt or does not match what was asked of it."""


class OutputExistsError(CondgenError):
    """An output file exists already and `--force` was not given."""
