"""Errors caused by the user's input; the entry points print their message without a traceback."""


class UserError(Exception):
    """Base of every error whose message names the problem and the fix."""


class ConfigError(UserError, ValueError):
    """A config value is invalid; the message names the key and says how to fix it."""


class DatasetError(UserError, RuntimeError):
    """A dataset is missing, unreadable or corrupt; the message names the files and the fix."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the configured model."""
