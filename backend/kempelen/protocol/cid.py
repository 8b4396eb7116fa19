"""Content identifiers (CIDs) as Kubo writes them: sha2-256, raw or dag-pb, CIDv0 and CIDv1.

Only what Kempelen puts on-chain and in its stores is supported, so a CID that
parses here is one every other Kempelen component can serve and verify.
The binary form (`to_bytes`) is what contract events carry.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from kempelen.errors import InvalidCID

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
DIGEST_SIZE = 32

CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb"}

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_MULTIHASH_PREFIX = bytes((SHA2_256, DIGEST_SIZE))


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128, the multiformats varint (also protobuf's)."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """Return (value, next position); multiformats caps varints at 9 bytes."""
    value = shift = 0
    for i in range(pos, min(pos + 9, len(buf))):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    raise InvalidCID("truncated or overlong varint")


def b58encode(data: bytes) -> str:
    # Leading zero bytes become leading '1's; the rest is a big-endian base-58 number.
    zeros = len(data) - len(data.lstrip(b"\0"))
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rem = divmod(number, 58)
        digits.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        try:
            number = number * 58 + _B58_INDEX[char]
        except KeyError:
            raise InvalidCID(f"{char!r} is not a base58btc character") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


def b32encode(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding (multibase 'b')."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32decode(text: str) -> bytes:
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        return base64.b32decode(padded)
    except ValueError as exc:
        raise InvalidCID(f"bad base32: {exc}") from None


@dataclass(frozen=True, slots=True)
class CID:
    """A sha2-256 CID: `version` 0 or 1, `codec` RAW or DAG_PB, 32-byte `digest`."""

    version: int
    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise InvalidCID(f"unsupported CID version {self.version}")
        if self.codec not in CODEC_NAMES:
            raise InvalidCID(f"unsupported codec 0x{self.codec:x} (only raw and dag-pb)")
        if self.version == 0 and self.codec != DAG_PB:
            raise InvalidCID("CIDv0 can only name dag-pb blocks")
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_SIZE:
            raise InvalidCID("a sha2-256 digest is 32 bytes")

    # -- constructors ---------------------------------------------------------

    @classmethod
    def for_block(cls, codec: int, block: bytes | memoryview, version: int = 1) -> CID:
        """The CID of a block's bytes under `codec`."""
        return cls(version, codec, hashlib.sha256(block).digest())

    @classmethod
    def parse(cls, value: str | bytes | bytearray | memoryview | CID) -> CID:
        """Parse a CID string (`Qm...`, `b...`, `z...`) or its binary form."""
        if isinstance(value, CID):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls.from_bytes(bytes(value))
        if not isinstance(value, str):
            raise InvalidCID(f"a CID is a string or bytes, not {type(value).__name__}")
        text = value.strip()
        if not text:
            raise InvalidCID("empty CID")
        try:
            if len(text) == 46 and text.startswith("Qm"):
                return cls.from_bytes(b58decode(text))
            prefix, body = text[0], text[1:]
            if prefix == "b":
                if body != body.lower():
                    raise InvalidCID("multibase 'b' is lower-case base32")
                return cls._from_v1_bytes(b32decode(body))
            if prefix == "B":
                return cls._from_v1_bytes(b32decode(body))
            if prefix == "z":
                return cls._from_v1_bytes(b58decode(body))
        except InvalidCID as exc:
            raise InvalidCID(f"malformed CID {_shorten(text)}: {exc}") from None
        raise InvalidCID(
            f"malformed CID {_shorten(text)}: expected CIDv0 'Qm...' or multibase base32 'b...'"
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CID:
        """Binary CID: a bare 34-byte sha2-256 multihash (v0) or `<0x01><codec><multihash>`."""
        if len(data) == 34 and data[:2] == _MULTIHASH_PREFIX:
            return cls(0, DAG_PB, bytes(data[2:]))
        return cls._from_v1_bytes(data)

    @classmethod
    def read_prefix(cls, buf: bytes | memoryview, pos: int = 0) -> tuple[CID, int]:
        """Read one binary CID at `pos` in a longer buffer (CAR sections); return (cid, end)."""
        if bytes(buf[pos : pos + 2]) == _MULTIHASH_PREFIX:
            end = pos + 34
            return cls.from_bytes(bytes(buf[pos:end])), end
        version, p = decode_varint(buf, pos)
        codec, p = decode_varint(buf, p)
        hash_code, p = decode_varint(buf, p)
        size, p = decode_varint(buf, p)
        if version != 1:
            raise InvalidCID(f"unsupported CID version {version}")
        if hash_code != SHA2_256 or size != DIGEST_SIZE:
            raise InvalidCID(f"unsupported multihash 0x{hash_code:x}/{size} (only sha2-256)")
        end = p + DIGEST_SIZE
        if end > len(buf):
            raise InvalidCID("truncated digest")
        return cls(1, codec, bytes(buf[p:end])), end

    @classmethod
    def _from_v1_bytes(cls, data: bytes) -> CID:
        if not data:
            raise InvalidCID("empty binary CID")
        if data[0] == SHA2_256:
            raise InvalidCID("a bare multihash is only valid as a 34-byte CIDv0")
        cid, end = cls.read_prefix(data)
        if end != len(data):
            raise InvalidCID(f"{len(data) - end} trailing bytes after the digest")
        return cid

    # -- forms ----------------------------------------------------------------

    @property
    def multihash(self) -> bytes:
        return _MULTIHASH_PREFIX + self.digest

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES[self.codec]

    def to_bytes(self) -> bytes:
        """The binary CID, as contract events carry it."""
        if self.version == 0:
            return self.multihash
        return bytes((1,)) + encode_varint(self.codec) + self.multihash

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def __str__(self) -> str:
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + b32encode(self.to_bytes())

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"

    def v0(self) -> CID:
        """The CIDv0 of the same block; only dag-pb blocks have one."""
        if self.codec != DAG_PB:
            raise InvalidCID(f"{self} is {self.codec_name}; CIDv0 can only name dag-pb blocks")
        return CID(0, DAG_PB, self.digest)

    def v1(self) -> CID:
        return CID(1, self.codec, self.digest)


def raw_cid(digest: bytes) -> CID:
    """CIDv1 raw sha2-256 of a 32-byte digest: the CID of a single-block answer payload."""
    return CID(1, RAW, bytes(digest))


def _shorten(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")
