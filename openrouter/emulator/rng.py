"""Deterministic randomness as a pure function of (seed, what, index...).

Activity for a key and day must not depend on which other days were generated before (moving "today"
forward keeps past days identical), so nothing here carries state between calls.
"""

from __future__ import annotations

import hashlib
import random
import struct

_UNPACK_32 = struct.Struct("<32H").unpack
_PACK = struct.Struct("<Iqq").pack


def seed_key(seed: int) -> bytes:
    return hashlib.sha256(f"doow-emulator-rng:{seed}".encode()).digest()


def draws(key: bytes, tag: int, a: int, b: int = 0) -> tuple[int, ...]:
    """32 independent uniform integers in [0, 65536); about a microsecond, the hot path of the generator."""
    digest = hashlib.blake2b(_PACK(tag, a, b), digest_size=64, key=key).digest()
    return _UNPACK_32(digest)


def rng(key: bytes, tag: int, a: int, b: int = 0) -> random.Random:
    """A full Random for rarely built things (profiles, members); too slow (~6 us) for per-day rows."""
    digest = hashlib.blake2b(_PACK(tag, a, b), digest_size=16, key=key).digest()
    return random.Random(int.from_bytes(digest, "little"))


def hex_id(*parts: object, length: int = 64) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()[:length]


def uuid_like(*parts: object) -> str:
    h = hex_id(*parts, length=32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
