"""The one error of the checkpoint format."""


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable, damaged, of an unknown format, or does not match its card."""
