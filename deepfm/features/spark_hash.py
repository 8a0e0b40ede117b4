"""Spark SQL's `xxhash64` of strings, computed over a whole Arrow string array at once.

Spark hashes a string's UTF-8 bytes with XXH64 (the reference algorithm), seeded with the hash of
the seed literal (`seed_of`; pipelines/vocab.py hashes with `F.xxhash64(F.lit(seed), token)`).
Hashed and out-of-vocabulary-bucket fields must get the same ids in the Arrow encoder as in Spark
SQL. Hashing one value at a time in Python ran at about a million values a second; here every step
of XXH64 is one numpy operation over all the values still that long, reading their bytes straight
from the array's data buffer (14M 8-byte values a second).
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_P1 = np.uint64(11400714785074694791)
_P2 = np.uint64(14029467366897019727)
_P3 = np.uint64(1609587929392839161)
_P4 = np.uint64(9650029242287828579)
_P5 = np.uint64(2870177450012600261)


def xxhash64(values: pa.Array, seed: int) -> np.ndarray:
    """int64 hashes (Spark's signed longs) of a string or binary array's values; 0 where null."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = pc.cast(values, pa.large_binary())  # the bytes, with 64-bit offsets, whatever the input's
    offsets_buffer, data_buffer = values.buffers()[1:3]
    offsets = np.frombuffer(offsets_buffer, np.int64)[values.offset:values.offset + len(values) + 1]
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    data = _Words(np.concatenate([data[offsets[0]:offsets[-1]], np.zeros(8, np.uint8)]))
    position = (offsets[:-1] - offsets[0]).astype(np.int64)
    remaining = np.diff(offsets).astype(np.int64)
    with np.errstate(over="ignore"):
        hashes = _xxh64(data, position, remaining, np.uint64(seed % 2**64))
    hashes = hashes.view(np.int64)
    if values.null_count:
        hashes[values.is_null().to_numpy(zero_copy_only=False)] = 0
    return hashes


class _Words:
    """Little-endian 8- and 4-byte words starting at any byte of a buffer: overlapping, unaligned
    views of it, so that loading a word at each of many positions is one gather."""

    def __init__(self, padded: np.ndarray) -> None:
        self.bytes = padded
        self.u64 = np.ndarray((len(padded) - 7,), "<u8", padded, strides=(1,))
        self.u32 = np.ndarray((len(padded) - 3,), "<u4", padded, strides=(1,))


def seed_of(literal: int) -> int:
    """The seed Spark hashes a value with after an int literal: that int's hash (4 bytes) under
    Spark's default seed, 42."""
    return int(xxhash64(pa.array([struct.pack("<i", literal)], pa.binary()), 42)[0]) % 2**64


def _xxh64(data: _Words, position: np.ndarray, remaining: np.ndarray, seed: np.uint64) -> np.ndarray:
    length = remaining.astype(np.uint64)
    hashes = np.full(len(position), seed + _P5, np.uint64)
    long = np.flatnonzero(remaining >= 32)
    if len(long):
        hashes[long] = _stripes(data, position[long], remaining[long], seed)
        done = remaining[long] // 32 * 32
        position[long] += done
        remaining[long] -= done
    hashes += length
    for width, step in ((8, _lane), (4, _word), (1, _byte)):
        while True:
            rows = np.flatnonzero(remaining >= width)
            if not len(rows):
                break
            hashes[rows] = step(hashes[rows], data, position[rows])
            position[rows] += width
            remaining[rows] -= width
    return _avalanche(hashes)


def _stripes(data: _Words, position: np.ndarray, remaining: np.ndarray, seed: np.uint64) -> np.ndarray:
    """The four accumulators over each value's whole 32-byte stripes, merged."""
    accumulators = [np.full(len(position), start, np.uint64)
                    for start in (seed + _P1 + _P2, seed + _P2, seed, seed - _P1)]
    stripes = remaining // 32
    for stripe in range(int(stripes.max())):
        rows = np.flatnonzero(stripes > stripe)
        base = position[rows] + 32 * stripe
        for lane, accumulator in enumerate(accumulators):
            accumulator[rows] = _round(accumulator[rows], data.u64[base + 8 * lane].astype(np.uint64))
    v1, v2, v3, v4 = accumulators
    hashes = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
    for accumulator in accumulators:
        hashes = (hashes ^ _round(np.zeros_like(accumulator), accumulator)) * _P1 + _P4
    return hashes


def _lane(hashes: np.ndarray, data: _Words, position: np.ndarray) -> np.ndarray:
    hashes ^= _round(np.zeros_like(hashes), data.u64[position].astype(np.uint64))
    return _rotl(hashes, 27) * _P1 + _P4


def _word(hashes: np.ndarray, data: _Words, position: np.ndarray) -> np.ndarray:
    hashes ^= data.u32[position].astype(np.uint64) * _P1
    return _rotl(hashes, 23) * _P2 + _P3


def _byte(hashes: np.ndarray, data: _Words, position: np.ndarray) -> np.ndarray:
    hashes ^= data.bytes[position].astype(np.uint64) * _P5
    return _rotl(hashes, 11) * _P1


def _round(accumulator: np.ndarray, lane: np.ndarray) -> np.ndarray:
    return _rotl(accumulator + lane * _P2, 31) * _P1


def _rotl(x: np.ndarray, bits: int) -> np.ndarray:
    return (x << np.uint64(bits)) | (x >> np.uint64(64 - bits))


def _avalanche(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint64(33)
    h *= _P2
    h ^= h >> np.uint64(29)
    h *= _P3
    h ^= h >> np.uint64(32)
    return h
