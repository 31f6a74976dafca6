"""The one error type the tasks turn into a one-line message and a non-zero exit."""


class LabError(Exception):
    """A problem the user can fix; the message names the setting or resource and the fix."""
