"""The one exception type for mistakes a user can fix (bad config key, missing file, wrong checkpoint).

Entry scripts catch it and print its one-line message instead of a traceback (unless ``--debug``).
"""


class UserError(Exception):
    """A problem with the user's input, explained in one line."""
