"""Readable passphrases for recipients: six words from a list of concrete, easy-to-spell words."""

from __future__ import annotations

import functools
import math
import secrets
from pathlib import Path

WORDS_FILE = Path(__file__).with_name("words.txt")
MIN_BITS = 52  # far beyond guessing through Argon2id (≈0.2 s a try) with the database in hand


@functools.cache
def words() -> tuple[str, ...]:
    found = tuple(sorted({w.strip() for w in WORDS_FILE.read_text(encoding="utf-8").split() if w.strip()}))
    assert len(found) >= 512, "the passphrase word list is too short"
    return found


def word_count(min_bits: float = MIN_BITS) -> int:
    return math.ceil(min_bits / math.log2(len(words())))


def generate_passphrase(min_bits: float = MIN_BITS) -> str:
    """Words joined by hyphens, at least ``min_bits`` of entropy (6 words, ≈56 bits, today)."""
    return "-".join(secrets.choice(words()) for _ in range(word_count(min_bits)))
