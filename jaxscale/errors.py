"""The one error type for mistakes a user can make.

A `JaxscaleError` message is a single line that says what to change. The CLI prints it as
``jaxscale: error: <message>`` and exits with status 2; any other exception is a bug and keeps
its traceback.
"""


class JaxscaleError(Exception):
  """A mistake the user can fix (bad config, unknown dataset, too few points, ...)."""

  def __init__(self, message: str):
    # Keep the message on one line whatever the caller passed.
    super().__init__(" ".join(str(message).split()))
