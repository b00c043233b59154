"""One exception root for maskgate; each subclass also inherits the matching builtin."""

from __future__ import annotations


class MaskgateError(Exception):
    """Root of every error maskgate raises on purpose."""


class ConfigError(MaskgateError, ValueError):
    """A configuration value is wrong; the message names the key, the value and the fix."""


class ModelError(MaskgateError, RuntimeError):
    """A model file is missing, corrupt, or does not match its manifest."""


class DownloadError(ModelError):
    """A model could not be downloaded or failed its checksum."""


class ImageError(MaskgateError, ValueError):
    """An image could not be read or decoded."""


class SourceError(MaskgateError, OSError):
    """A frame source failed to open or to deliver frames."""


class DataError(MaskgateError, ValueError):
    """Training or evaluation data is missing or malformed."""


class RuntimeUnavailableError(ModelError):
    """No TFLite runtime (ai-edge-litert or tflite-runtime) could be imported."""
