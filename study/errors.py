"""User mistakes: one line naming the field and the fix, exit code 2, no traceback."""


class UserError(Exception):
    """A problem the user can fix (config, paths, environment), not a bug."""

    exit_code = 2
