"""The base of every error a user can cause and fix (a bad file, a missing checkpoint, a config typo).

Command-line tools print such errors as one line and exit non-zero; anything else is a bug and keeps
its traceback.
"""


class InputError(Exception):
    """Bad or missing user input; the message names the file or key and the fix."""


class MissingFileError(InputError, FileNotFoundError):
    """A file named by the user or the config that is not there; the message says how to get it."""
