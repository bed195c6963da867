"""The one exception the training modules raise for problems a user can fix."""

from __future__ import annotations


class TrainingError(ValueError):
    """A bad option combination, an unusable checkpoint or data, a diverged run; the message
    says what to change."""
