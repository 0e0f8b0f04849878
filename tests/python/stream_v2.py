"""A numpy reimplementation of reinit's random stream v2, from docs/stream.md alone.

Used by test_stream_v2.py to check that the specification is complete: these functions
give the same f32 values as reinit, bit for bit. Only numpy and hashlib.
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np

CHUNK = 1 << 16
M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85


def f32(bits: int) -> np.float32:
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


LOG_P = [f32(b) for b in (0x3D9021BB, 0xBDEBD1B8, 0x3DEF251B, 0xBDFE5D4F, 0x3E11E9BF,
                          0xBE2AAE50, 0x3E4CCEAC, 0xBE7FFFFC, 0x3EAAAAAA)]
SIN_P = [f32(b) for b in (0xB94CA1F9, 0x3C08839E, 0xBE2AAAA3)]
COS_P = [f32(b) for b in (0x37CCF5CE, 0xBAB6061A, 0x3D2AAAA5)]
SQRT_HALF = f32(0x3F3504F3)
LN2_HI = f32(0x3F318000)
LN2_LO = f32(0xB95E8083)
ANGLE_STEP = f32(0x33C90FDB)
TWO_POW_M31 = f32(0x30000000)
HALF, ONE, TWO = np.float32(0.5), np.float32(1.0), np.float32(2.0)


def digest(version: int, seed: int, name: str, scheme: str) -> bytes:
    n, s = name.encode(), scheme.encode()
    return hashlib.sha256(
        b"reinit-stream" + struct.pack("<IQ", version, seed)
        + struct.pack("<Q", len(n)) + n + struct.pack("<Q", len(s)) + s
    ).digest()


def substream_digest(parent: bytes, purpose: str) -> bytes:
    p = purpose.encode()
    return hashlib.sha256(b"reinit-substream" + parent + struct.pack("<Q", len(p)) + p).digest()


def philox(c0, c1, c2, c3, key):
    """Philox4x32-10 of counters (c0, c1, c2, c3) (uint32 arrays) under key (k0, k1)."""
    c = [np.asarray(x, dtype=np.uint32) for x in (c0, c1, c2, c3)]
    c = [np.broadcast_to(x, np.broadcast(*c).shape).copy() for x in c]
    k0, k1 = key
    for rnd in range(10):
        if rnd:
            k0, k1 = (k0 + W0) & 0xFFFFFFFF, (k1 + W1) & 0xFFFFFFFF
        p0 = np.uint64(M0) * c[0].astype(np.uint64)
        p1 = np.uint64(M1) * c[2].astype(np.uint64)
        c = [
            (p1 >> np.uint64(32)).astype(np.uint32) ^ c[1] ^ np.uint32(k0),
            p1.astype(np.uint32),
            (p0 >> np.uint64(32)).astype(np.uint32) ^ c[3] ^ np.uint32(k1),
            p0.astype(np.uint32),
        ]
    return c


def key_of(d: bytes):
    k0, k1, tag = struct.unpack("<III", d[:12])
    return (k0, k1), tag


def ln_unit(u):
    bits = u.view(np.uint32)
    e = (bits >> np.uint32(23)).astype(np.int32) - 126
    m = ((bits & np.uint32(0x007FFFFF)) | np.uint32(0x3F000000)).view(np.float32)
    below = m < SQRT_HALF
    x = np.where(below, (m + m) - ONE, m - ONE)
    e = e - below.astype(np.int32)
    z = x * x
    p = np.full_like(x, LOG_P[0])
    for c in LOG_P[1:]:
        p = p * x + c
    fe = e.astype(np.float32)
    y = p * x * z
    y = y + LN2_LO * fe
    y = y - HALF * z
    r = x + y
    return r + LN2_HI * fe


def box_muller(a, b):
    x = (a >> np.uint32(1)).astype(np.int32).astype(np.float32)
    u = (x + HALF) * TWO_POW_M31
    r = np.sqrt(np.float32(-2.0) * ln_unit(u))
    q = b >> np.uint32(30)
    s = ((b >> np.uint32(6)) & np.uint32(0xFFFFFF)).astype(np.int32) - 0x800000
    phi = (s.astype(np.float32) + HALF) * ANGLE_STEP
    z = phi * phi
    sin = ((SIN_P[0] * z + SIN_P[1]) * z + SIN_P[2]) * z * phi + phi
    cos = ((COS_P[0] * z + COS_P[1]) * z + COS_P[2]) * z * z - HALF * z + ONE
    odd = (q & np.uint32(1)) == 1
    c, s = np.where(odd, sin, cos), np.where(odd, cos, sin)
    c = np.where(((q ^ (q >> np.uint32(1))) & np.uint32(1)) == 1, -c, c)
    s = np.where((q >> np.uint32(1)) == 1, -s, s)
    return r * c, r * s


def chunk_words(d: bytes, fill: int, k: int, groups: int):
    """The word sequence of chunk k of fill number `fill`, `groups` groups of 32:
    group g is blocks 8g..8g+7, word-major (word 0 of the 8 blocks, then word 1, ...)."""
    key, tag = key_of(d)
    w = philox(np.arange(8 * groups, dtype=np.uint32), k, fill, tag, key)
    return np.stack([x.reshape(groups, 8) for x in w], axis=1).reshape(-1)


def chunk_normals(d: bytes, fill: int, k: int, groups: int):
    """The f32 normal sequence of chunk k of fill number `fill`, `groups` groups of 32:
    group g is r·cos, r·sin of BM(w0, w1), then of BM(w2, w3), each over blocks 8g..8g+7."""
    key, tag = key_of(d)
    w = [x.reshape(groups, 8) for x in philox(np.arange(8 * groups, dtype=np.uint32), k, fill, tag, key)]
    c01, s01 = box_muller(w[0], w[1])
    c23, s23 = box_muller(w[2], w[3])
    return np.stack([c01, s01, c23, s23], axis=1).reshape(-1)


def fill(d: bytes, fill_no: int, law: str, n: int, **p) -> np.ndarray:
    """Values 0..n of bulk fill number `fill_no` (1 for a stream's first fill), as f64."""
    out = []
    for k in range(-(-n // CHUNK)):
        m = min(CHUNK, n - k * CHUNK)
        groups = -(-m // 32)
        if law == "normal":
            z = chunk_normals(d, fill_no, k, groups)[:m]
            out.append(z.astype(np.float64) * p["std"])
        elif law == "truncated_normal":
            extra = 2
            z = chunk_normals(d, fill_no, k, groups + extra)
            while np.count_nonzero(np.abs(z) < TWO) < m:  # rare: draw further groups
                extra *= 2
                z = chunk_normals(d, fill_no, k, groups + extra)
            z = z[np.abs(z) < TWO]
            out.append(z[:m].astype(np.float64) * p["std"])
        elif law == "uniform":
            x = chunk_words(d, fill_no, k, groups)[:m]
            lo, hi = p["lo"], p["hi"]
            out.append(lo + (hi - lo) * (x.astype(np.float64) * 2.0**-32))
        else:
            raise ValueError(law)
    return np.concatenate(out) if out else np.zeros(0)


class Sequential:
    """The sequential stream (counter fill = 0)."""

    def __init__(self, d: bytes):
        self.key, self.tag = key_of(d)
        self.block, self.words = 0, []

    def word(self) -> int:
        if not self.words:
            b = self.block
            w = philox(b & 0xFFFFFFFF, b >> 32, 0, self.tag, self.key)
            self.words = [int(x) for x in w]
            self.block += 1
        return self.words.pop(0)

    def u64(self) -> int:
        lo = self.word()
        return lo | self.word() << 32

    def uniform(self) -> float:
        return (self.u64() >> 11) * 2.0**-53

    def normal(self) -> float:
        a, b = self.word(), self.word()
        return float(box_muller(np.array([a], np.uint32), np.array([b], np.uint32))[0][0])
