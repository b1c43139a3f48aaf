"""Errors that ``launch.py`` reports as one clear line instead of a traceback."""


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the key, the value and what is allowed."""
