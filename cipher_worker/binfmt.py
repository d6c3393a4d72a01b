"""The envelope's binary encoding: length-prefixed blobs and typed arrays, little-endian.

An array is a u8 dtype code (:data:`DTYPE_CODES`), a u32 element count and the elements. Every
shortfall while reading is an EnvelopeError, never an IndexError.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import EnvelopeError

DTYPE_CODES = {"<f8": 1, "<f4": 2, "<u4": 3, "|u1": 4}  # 4: since FIT, a pixel cipher's stored crop


class Writer:
    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, data: bytes) -> None:
        self._parts.append(data)

    def pack(self, fmt: str, *values: int) -> None:
        self._parts.append(struct.pack(fmt, *values))

    def blob(self, data: bytes, length_fmt: str, what: str) -> None:
        if len(data) >= 1 << (8 * struct.calcsize(length_fmt)):
            raise EnvelopeError(f"{what} is too long to store in the photo's recovery data")
        self.pack(length_fmt, len(data))
        self.raw(data)

    def array(self, values: NDArray[np.generic], dtype: str) -> None:
        self.pack("<BI", DTYPE_CODES[dtype], values.size)
        self.raw(np.ascontiguousarray(values, dtype=dtype).tobytes())

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads the envelope format; every shortfall is an EnvelopeError, never an IndexError."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise EnvelopeError("the photo's recovery data is truncated")
        self._pos += n
        return self._data[self._pos - n : self._pos]

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def blob(self, length_fmt: str) -> bytes:
        return self.take(self.unpack(length_fmt)[0])

    def array(self, dtype: str, what: str) -> NDArray[Any]:
        code, count = self.unpack("<BI")
        if code != DTYPE_CODES[dtype]:
            raise EnvelopeError(f"the photo's recovery data is corrupted: a face's {what} has the wrong type")
        itemsize = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(count * itemsize), dtype=dtype).astype(dtype[1:])

    def array_of(self, dtypes: tuple[str, ...], what: str) -> NDArray[Any]:
        """An array of any of ``dtypes``, as its code says."""
        code = self._data[self._pos] if self._pos < len(self._data) else None
        for dtype in dtypes:
            if code == DTYPE_CODES[dtype]:
                return self.array(dtype, what)
        return self.array(dtypes[0], what)  # the wrong type (or truncated): its error

    def at_end(self) -> bool:
        return self._pos == len(self._data)
