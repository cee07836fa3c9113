"""Errors the engine raises on purpose: each carries a one-line message for a person."""


class EngineError(Exception):
    """Base class: `str(err)` is a complete, user-facing sentence (no traceback needed)."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} {self.hint}"


class InputError(EngineError):
    """Bad user input: audio, image, prompt, size, frames."""


class WeightsError(EngineError):
    """Missing, truncated or mismatched weight files."""


class Cancelled(EngineError):
    """The run was cancelled by the user."""

    def __init__(self, message: str = "Generation cancelled."):
        super().__init__(message)


class OutOfResources(EngineError):
    """Not enough disk or memory to go on."""
