"""Typed errors a user can hit. Each carries a one-line message fit to show as is."""

from __future__ import annotations


class VeilError(Exception):
    """Base class. ``exit_code`` is what the CLI returns for it."""

    exit_code = 2


class BadInput(VeilError):
    """The input cannot be used (not an image, truncated, too large, bad arguments)."""


class NotAnImage(BadInput):
    pass


class ImageTooLarge(BadInput):
    pass


class EnvelopeError(BadInput):
    """The recovery envelope is missing, corrupt, tampered with or from another codec."""


class NoEnvelope(EnvelopeError):
    pass


class EnvelopeTampered(EnvelopeError):
    pass


class CodecMismatch(EnvelopeError):
    pass


class CipherMismatch(EnvelopeError):
    """The envelope was made by another cipher, or other weights of it, than recovery has."""


class WrongKey(VeilError):
    """A password, passphrase or key does not open what it was given."""

    exit_code = 3


class PassphraseRequired(WrongKey):
    pass


class BadCheckpoint(BadInput):
    """A model checkpoint is missing, truncated, of the wrong format or does not match its pair."""
