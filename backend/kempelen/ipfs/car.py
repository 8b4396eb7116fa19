"""CARv1 (Content Addressable aRchive) streams: write, and read with every block verified.

Layout: varint(len) + dag-cbor header `{roots: [CID...], version: 1}`, then
sections `varint(len(cid) + len(block)) + binary CID + block`. The header is
the only CBOR a CARv1 carries, so a tiny encoder/decoder for its shape is
written here rather than taking a CBOR dependency.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from kempelen.errors import InvalidCID
from kempelen.ipfs.errors import CarFormatError, CorruptBlock
from kempelen.protocol.cid import CID, encode_varint

MAX_HEADER = 1 << 20
MAX_SECTION = 4 << 20  # Kubo refuses blocks over 2 MiB; leave room, refuse absurd ones
CAR_CONTENT_TYPE = "application/vnd.ipld.car; version=1; order=dfs; dups=n"


# -- the header's dag-cbor ----------------------------------------------------------


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes((major << 5 | value,))
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes((major << 5 | info,)) + value.to_bytes(size, "big")
    raise ValueError("CBOR length too large")


def encode_header(roots: list[CID]) -> bytes:
    # dag-cbor sorts map keys by length, then bytes: "roots" before "version".
    body = _cbor_head(5, 2) + _cbor_head(3, 5) + b"roots" + _cbor_head(4, len(roots))
    for root in roots:
        raw = b"\0" + root.to_bytes()  # dag-cbor CID: tag 42 over 0x00 + binary CID
        body += b"\xd8\x2a" + _cbor_head(2, len(raw)) + raw
    body += _cbor_head(3, 7) + b"version" + _cbor_head(0, 1)
    return encode_varint(len(body)) + body


def _decode_cbor(buf: bytes, pos: int):
    """Decode the CBOR subset a CAR header uses: ints, strings, arrays, maps, tag 42."""
    if pos >= len(buf):
        raise CarFormatError("truncated CAR header")
    initial = buf[pos]
    major, info = initial >> 5, initial & 31
    pos += 1
    if info < 24:
        value = info
    elif info <= 27:
        size = 1 << (info - 24)
        value = int.from_bytes(buf[pos : pos + size], "big")
        pos += size
    else:
        raise CarFormatError("indefinite-length CBOR is not dag-cbor")
    if major == 0:
        return value, pos
    if major in (2, 3):
        chunk = buf[pos : pos + value]
        if len(chunk) != value:
            raise CarFormatError("truncated CAR header")
        return (chunk if major == 2 else chunk.decode("utf-8")), pos + value
    if major == 4:
        items = []
        for _ in range(value):
            item, pos = _decode_cbor(buf, pos)
            items.append(item)
        return items, pos
    if major == 5:
        mapping = {}
        for _ in range(value):
            key, pos = _decode_cbor(buf, pos)
            mapping[key], pos = _decode_cbor(buf, pos)
        return mapping, pos
    if major == 6 and value == 42:
        raw, pos = _decode_cbor(buf, pos)
        if not isinstance(raw, bytes) or raw[:1] != b"\0":
            raise CarFormatError("malformed CID in CAR header")
        return CID.from_bytes(raw[1:]), pos
    raise CarFormatError(f"unexpected CBOR major type {major} in CAR header")


# -- streams ------------------------------------------------------------------------


def write_car(out: BinaryIO, roots: list[CID], blocks: Iterable[tuple[CID, bytes]]) -> int:
    """Write a CARv1; return the bytes written."""
    written = out.write(encode_header(roots)) or 0
    for cid, block in blocks:
        cid_bytes = cid.to_bytes()
        section = encode_varint(len(cid_bytes) + len(block)) + cid_bytes
        written += (out.write(section) or 0) + (out.write(block) or 0)
    return written


def car_chunks(roots: list[CID], blocks: Iterable[tuple[CID, bytes]]) -> Iterator[bytes]:
    """The same bytes as write_car, as an iterator (for streaming HTTP responses)."""
    yield encode_header(roots)
    for cid, block in blocks:
        cid_bytes = cid.to_bytes()
        yield encode_varint(len(cid_bytes) + len(block)) + cid_bytes
        yield block


def _read_varint(src: BinaryIO) -> int | None:
    value = shift = 0
    for count in range(9):
        byte = src.read(1)
        if not byte:
            if count == 0:
                return None
            raise CarFormatError("truncated varint in CAR")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
    raise CarFormatError("overlong varint in CAR")


def _read_exact(src: BinaryIO, size: int) -> bytes:
    data = src.read(size)
    if len(data) != size:
        raise CarFormatError(f"truncated CAR: wanted {size} bytes, got {len(data)}")
    return data


class CarReader:
    """Reads a CARv1 from a stream: `roots` at once, then `blocks()` lazily, each verified."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        size = _read_varint(src)
        if size is None or size == 0:
            raise CarFormatError("empty stream is not a CAR")
        if size > MAX_HEADER:
            raise CarFormatError(f"CAR header of {size} bytes is too large")
        header, end = _decode_cbor(_read_exact(src, size), 0)
        if end != size or not isinstance(header, dict):
            raise CarFormatError("CAR header is not a single CBOR map")
        if header.get("version") != 1:
            raise CarFormatError(f"unsupported CAR version {header.get('version')!r} (need 1)")
        roots = header.get("roots")
        if not isinstance(roots, list) or not all(isinstance(r, CID) for r in roots):
            raise CarFormatError("CAR header has no list of root CIDs")
        self.roots: list[CID] = roots

    def blocks(self) -> Iterator[tuple[CID, bytes]]:
        while (size := _read_varint(self._src)) is not None:
            if size > MAX_SECTION:
                raise CarFormatError(f"CAR section of {size} bytes is too large")
            section = _read_exact(self._src, size)
            try:
                cid, start = CID.read_prefix(section)
            except InvalidCID as exc:
                raise CarFormatError(f"bad CID in CAR section: {exc}") from None
            block = section[start:]
            if hashlib.sha256(block).digest() != cid.digest:
                raise CorruptBlock(f"CAR block does not hash to its CID {cid}")
            yield cid, block
