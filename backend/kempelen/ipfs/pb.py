"""dag-pb and UnixFS protobuf, hand-written and byte-exact with Kubo.

dag-pb (the spec's canonical form, which Kubo writes): every link (field 2)
before the data (field 1); each link carries Hash, Name and Tsize, with the
empty Name written out (`12 00`), as go-merkledag has always done.
UnixFS `Data`: Type, Data (omitted when empty), filesize, then one
non-packed `blocksizes` (field 4) per child — proto2 repeated scalars.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kempelen.errors import InvalidCID
from kempelen.ipfs.errors import MalformedBlock
from kempelen.protocol.cid import CID, encode_varint

# UnixFS Data.DataType values (unixfs.proto).
UNIXFS_RAW = 0
UNIXFS_DIRECTORY = 1
UNIXFS_FILE = 2
UNIXFS_METADATA = 3
UNIXFS_SYMLINK = 4
UNIXFS_HAMT_SHARD = 5

_VARINT, _LEN = 0, 2


@dataclass(frozen=True, slots=True)
class PBLink:
    cid: CID
    tsize: int  # cumulative bytes of the child's blocks, as Kubo counts them
    name: str = ""


@dataclass(frozen=True, slots=True)
class PBNode:
    links: tuple[PBLink, ...]
    data: bytes | None


@dataclass(frozen=True, slots=True)
class UnixFSData:
    type: int
    data: bytes = b""
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default=())


def _key(field_number: int, wire_type: int) -> bytes:
    return encode_varint(field_number << 3 | wire_type)


def _bytes_field(field_number: int, value: bytes | memoryview) -> bytes:
    return _key(field_number, _LEN) + encode_varint(len(value)) + bytes(value)


def encode_link(link: PBLink) -> bytes:
    name = link.name.encode("utf-8")
    body = (
        _bytes_field(1, link.cid.to_bytes())
        + _bytes_field(2, name)
        + _key(3, _VARINT)
        + encode_varint(link.tsize)
    )
    return _bytes_field(2, body)


def encode_node(links: list[PBLink] | tuple[PBLink, ...], data: bytes | None) -> bytes:
    parts = [encode_link(link) for link in links]
    if data is not None:
        parts.append(_bytes_field(1, data))
    return b"".join(parts)


def encode_unixfs(
    type_: int,
    data: bytes | memoryview = b"",
    filesize: int | None = None,
    blocksizes: list[int] | tuple[int, ...] = (),
) -> bytes:
    parts = [_key(1, _VARINT), encode_varint(type_)]
    if len(data):
        parts.append(_bytes_field(2, data))
    if filesize is not None:
        parts += [_key(3, _VARINT), encode_varint(filesize)]
    for size in blocksizes:
        parts += [_key(4, _VARINT), encode_varint(size)]
    return b"".join(parts)


def encode_file_leaf(chunk: bytes | memoryview) -> bytes:
    """A CIDv0-style leaf: the chunk wrapped in a dag-pb node with UnixFS File data."""
    return encode_node((), encode_unixfs(UNIXFS_FILE, chunk, filesize=len(chunk)))


# -- decoding -------------------------------------------------------------------


def _fields(buf: bytes | memoryview):
    """Yield (field number, wire type, value) over a protobuf message."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == _LEN:
            size, pos = _read_varint(buf, pos)
            if pos + size > end:
                raise MalformedBlock("protobuf field runs past the end of the block")
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise MalformedBlock(f"unexpected protobuf wire type {wire}")
        yield number, wire, value


def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(buf):
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            break
    raise MalformedBlock("truncated or overlong protobuf varint")


def decode_node(block: bytes | memoryview) -> PBNode:
    links: list[PBLink] = []
    data: bytes | None = None
    try:
        for number, wire, value in _fields(memoryview(block)):
            if number == 2 and wire == _LEN:
                links.append(_decode_link(value))
            elif number == 1 and wire == _LEN:
                data = bytes(value)
            else:
                raise MalformedBlock(f"unexpected dag-pb field {number}")
    except MalformedBlock:
        raise
    except (InvalidCID, UnicodeDecodeError) as exc:  # a link's CID or Name is bad
        raise MalformedBlock(f"malformed dag-pb node: {exc}") from None
    return PBNode(tuple(links), data)


def _decode_link(buf: memoryview) -> PBLink:
    cid, name, tsize = None, "", 0
    for number, _wire, value in _fields(buf):
        if number == 1:
            cid = CID.from_bytes(bytes(value))
        elif number == 2:
            name = bytes(value).decode("utf-8")
        elif number == 3:
            tsize = value
    if cid is None:
        raise MalformedBlock("dag-pb link without a Hash")
    return PBLink(cid, tsize, name)


def decode_unixfs(data: bytes | memoryview) -> UnixFSData:
    type_, payload, filesize, blocksizes = None, b"", None, []
    for number, wire, value in _fields(memoryview(data)):
        if number == 1:
            type_ = value
        elif number == 2:
            payload = bytes(value)
        elif number == 3:
            filesize = value
        elif number == 4 and wire == _VARINT:
            blocksizes.append(value)
        elif number == 4:  # tolerate a packed encoding from other writers
            pos = 0
            while pos < len(value):
                size, pos = _read_varint(value, pos)
                blocksizes.append(size)
    if type_ is None:
        raise MalformedBlock("UnixFS data without a Type")
    return UnixFSData(type_, payload, filesize, tuple(blocksizes))
