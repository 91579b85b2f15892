"""Errors a user can fix. Entry points print them as one line, never a traceback."""


class UserError(Exception):
  """A bad flag value, a missing file or unreachable data: the message says what to do."""


class ConfigError(UserError):
  """A flag or config value is out of its allowed range."""


class DataError(UserError):
  """Data is missing, malformed, or cannot be downloaded."""
