"""Veil's latent cipher: anonymize the faces of a photo with a key, and bring them back.

This package never imports Django; the web app calls it through :mod:`cipher_worker.api`.
"""
