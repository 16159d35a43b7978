"""MediaError: why one input failed (stage, error class, message); it crosses the worker-process pipe."""

from __future__ import annotations


class MediaError(Exception):
    """A failed input: the job records stage, error_class and message and goes on."""

    def __init__(self, stage: str, error_class: str, message: str):
        super().__init__(f"[{stage}/{error_class}] {message}")
        self.stage, self.error_class, self.message = stage, error_class, message

    def __reduce__(self):  # crosses the worker-process pipe
        return (MediaError, (self.stage, self.error_class, self.message))
