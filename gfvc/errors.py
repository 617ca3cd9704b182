"""Typed exceptions of the suite.

Library code raises these; only the CLI turns them into one-line messages and
exit codes. Every message says what is wrong *and* what to do about it.
"""
from __future__ import annotations


class GfvcError(Exception):
    """Base class of all suite errors. ``exit_code`` is used by the CLI."""

    exit_code: int = 2


class ConfigError(GfvcError):
    """A test condition, manifest or option is invalid (names file, key, reason)."""


class InputError(GfvcError):
    """An input file or array does not match what was declared."""


class ChecksumError(InputError):
    """A file's sha256 differs from the one recorded in a manifest or registry."""


class NotAvailable(GfvcError):
    """A binary, weight file or optional package needed for the work is missing."""


class WeightsError(NotAvailable):
    """Model weights are missing or fail sha256 verification."""


class OutputError(GfvcError):
    """An output path cannot be written (under a file, read-only, a device, bad extension)."""


class ExternalToolError(GfvcError):
    """An external program failed, timed out or produced unexpected output."""


class BitstreamError(GfvcError):
    """A bitstream is corrupt, truncated or not decodable by this codec/model."""


class ModelMismatch(BitstreamError):
    """A bitstream or checkpoint belongs to another model, config or resolution."""


class UnknownName(GfvcError):
    """An unknown registry name (codec, metric, condition); suggests close names."""


class JobFailed(GfvcError):
    """One or more jobs of a run failed; their records hold the errors."""

    exit_code = 1


class RegressionDetected(GfvcError):
    """A BD-rate saving worsened beyond the tolerance of the regression gate."""

    exit_code = 1


class ExternalToolCrash(ExternalToolError):
    """An external program died from a signal (crash, killed): transient, a retry may succeed."""
