"""Project exception types.

Every failure caused by the data (a bad file, a label map that does not fit its convention,
a DICOM series with a missing slice) raises a subclass of :class:`SsllError`. The command line
turns these into one log line naming the subject, the file and the problem, and a non-zero
exit code, never a library traceback.
"""

from __future__ import annotations

__all__ = ["DicomError", "InputImageError", "LabelError", "LandmarkError", "ModelError", "SsllError"]


class SsllError(Exception):
    """Base class of all domain errors raised by ``ssll``."""


class InputImageError(SsllError):
    """An input image cannot be read or is not a usable cardiac volume."""


class DicomError(InputImageError):
    """A DICOM series is incomplete, inconsistent or not a short-axis cine stack."""


class LabelError(SsllError):
    """A label map does not fit its declared label convention."""


class LandmarkError(SsllError):
    """Landmarks are missing or cannot be derived."""


class ModelError(SsllError):
    """Network weights or their model card are missing or inconsistent."""


class RegistrationError(SsllError):
    """Atlas registration failed: empty target, degenerate landmarks, or a diverged optimisation."""


class AtlasError(SsllError):
    """An atlas bank is missing, empty, or has an unreadable or inconsistent entry."""
