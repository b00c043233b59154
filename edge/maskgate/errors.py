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


class ConfigFileError(ConfigError):
    """A configuration file has one or more problems; ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n  " + "\n  ".join(self.problems))


class GpioError(MaskgateError, OSError):
    """An output or input pin could not be set up (no GPIO access, a pin in use, no pin library)."""


class FrameError(MaskgateError, ValueError):
    """One frame could not be read or decoded; the source itself is still usable."""
