"""Typed errors, translated at one boundary.

    GuardError
    ├── ConfigError          a config file or value is wrong (exit code 78, no restart)
    │   └── UsageError       a command-line option gave the bad value (exit code 2)
    ├── FrameError           a frame has the wrong dtype, shape or is empty
    ├── SourceError          a camera/file/folder cannot be opened or read
    ├── BackendUnavailable   an optional backend (CUDA, TensorRT, ORT provider) is missing
    ├── ModelError           a model file is missing, unreadable or gives unexpected outputs
    │   └── ModelOutputError a frame's output is unusable (NaN, ...): that frame is BLOCKed
    ├── ProfileError         a calibration profile is missing, corrupt or does not match
    └── PublishError         a sink/publisher cannot deliver or spool a message

Lower-level exceptions are mapped with ``raise Mapped(msg) from exc`` and messages say
what was expected and what was found.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "FrameError",
    "GuardError",
    "ModelError",
    "ModelOutputError",
    "ProfileError",
    "PublishError",
    "SourceConfigError",
    "SourceError",
    "UsageError",
]


class GuardError(Exception):
    """Base class of every error edge-guard raises on purpose."""


class ConfigError(GuardError):
    """A configuration file or value is invalid. The message names the field."""


class UsageError(ConfigError):
    """A value given by a command-line option is invalid (exit 2, like argparse's own errors); the
    message names the option. A ConfigError too, so that every ``except ConfigError`` still sees it."""


class FrameError(GuardError, ValueError):
    """A frame is not a non-empty HxWx3 uint8 BGR array (or a valid NV12 buffer)."""


class SourceError(GuardError):
    """A frame source cannot be opened or read."""


class SourceConfigError(SourceError, ConfigError):
    """The configured source cannot work as given: a malformed URI, a missing or undecodable file,
    an empty image folder. Fixing ``source.uri`` helps, restarting does not (exit 78). A live
    camera that does not answer is not this: the reader retries it with back-off."""


class BackendUnavailable(GuardError):
    """An optional backend is not usable on this machine; the message says why."""


class ModelError(GuardError):
    """A model cannot be loaded or run, or its outputs are not what the config declares."""


class ModelOutputError(ModelError):
    """The model ran, but its output for a frame cannot be used (NaN or infinity, probabilities that
    sum to 0): that frame is BLOCKed with the reason ``model_output``, the camera goes on."""


class ProfileError(GuardError):
    """A calibration profile is missing, corrupt, or made for another model/resolution."""


class PublishError(GuardError):
    """A message could not be delivered nor spooled."""
