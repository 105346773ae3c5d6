"""Errors that the command line reports as one readable line, without a traceback."""


class UserError(Exception):
    """Bad input from the user: a config value, a missing dataset, an unreadable checkpoint."""
