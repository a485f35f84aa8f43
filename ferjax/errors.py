"""The error type for user mistakes: printed as one line, without a traceback."""


class UserError(Exception):
  """A mistake in the command, config or data that the user can fix.

  `ferjax.main` prints it as `ferjax: error: <message>` and exits with status 2.
  """
