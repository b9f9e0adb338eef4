"""Errors a user can act on: each message says what was expected, what was found and where."""


class HunyuanError(Exception):
    """Base class for every error the core raises on purpose (the CLI prints it as one line)."""


class ModelFileError(HunyuanError):
    """A model file or folder is missing, truncated, unsafe, or not what the caller asked for."""


class InputError(HunyuanError, ValueError):
    """A user argument (size, prompt, sampler name, ...) is out of range or malformed."""


class OutputError(HunyuanError):
    """An output path cannot be written, or writing it would replace the user's files."""


class NumericsError(HunyuanError):
    """Weights, latents or settings hold NaN/Inf, or sampling produced them (a black image would follow)."""
