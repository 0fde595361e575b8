"""Expected errors: what a user can cause and fix (a bad file, field, option or video).

The command line prints these as one line (`aptune: error: ...`, exit 2); anything else is a bug
and shows its traceback (`APTUNE_DEBUG=1` shows the traceback of every error). Each class also
derives from the built-in exception it refines, so `except ValueError` keeps working.
"""
from __future__ import annotations


class AptuneError(Exception):
    """Base of every expected error; the message names the file, field or option at fault."""


class ConfigError(AptuneError, ValueError):
    """An impossible or unknown setting: a config field, method option or command-line value."""


class CheckpointError(AptuneError, ValueError):
    """A checkpoint or adapter that cannot be read, is not understood or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint needs a type outside the allow-list; nothing from it was executed."""


class DataError(AptuneError, ValueError):
    """A dataset, list file or label that cannot be used."""


class ExportError(AptuneError, RuntimeError):
    """A model an export format cannot represent, a missing exporter, or an export whose logits do not
    reproduce the model's."""


class MissingFileError(AptuneError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class UnknownNameError(ConfigError, KeyError):
    """An unknown model, method or format name (also a KeyError, as a failed look-up)."""

    def __str__(self) -> str:          # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
