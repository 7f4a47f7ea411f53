"""Errors that mean "the user must fix something": entry scripts print them as
one line (no traceback) and exit with code 2."""


class UserError(Exception):
    """Bad input, a missing file or asset, a wrong config key: fixable by the user."""


class ConfigError(UserError, ValueError):
    """A config file or override is malformed or names an unknown key."""


class MissingAssetError(UserError, FileNotFoundError):
    """A required file (model, asset, dataset) is not where the config says."""
