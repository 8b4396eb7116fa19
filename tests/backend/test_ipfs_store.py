"""The embedded store: round trips, verification on read, CARs (ours and an independent tool's)."""

import hashlib
import io
import tracemalloc

import pytest
from ipfs_helpers import PatternStream, flip_byte, node_check, node_json, payload
from kempelen.ipfs.blockstore import block_key
from kempelen.ipfs.car import CarReader, encode_header
from kempelen.ipfs.errors import BlockNotFound, CarFormatError, CorruptBlock
from kempelen.ipfs.store import ContentStore
from kempelen.ipfs.unixfs import CHUNK_SIZE, file_cid
from kempelen.protocol.cid import CID, encode_varint


@pytest.fixture
def store(tmp_path):
    return ContentStore(tmp_path / "store")


@pytest.mark.parametrize("version", [1, 0])
@pytest.mark.parametrize("size", [0, 5, CHUNK_SIZE, 3 * CHUNK_SIZE + 17])
def test_put_get_open_round_trip(store, size, version):
    data = payload(size)
    cid = store.put(data, version)
    assert cid == file_cid(data, version)
    assert store.has(cid)
    assert store.get(cid) == data
    assert store.open(cid).read() == data
    assert store.size(cid) == size


def test_add_path_and_stream_agree(store, tmp_path):
    data = payload(2 * CHUNK_SIZE + 1)
    path = tmp_path / "f"
    path.write_bytes(data)
    seen = []
    assert store.add_path(path, on_progress=seen.append) == store.put(io.BytesIO(data))
    assert sum(seen) == len(data)


def test_flatfs_layout_is_next_to_last_2(tmp_path):
    store = ContentStore(tmp_path / "store", layout="flatfs")
    cid = store.put(b"hello")
    key = block_key(cid)
    assert key.startswith("CIQ")  # base32 of the sha2-256 multihash prefix 0x12 0x20
    assert (store.root / "blocks" / key[-3:-1] / f"{key}.data").read_bytes() == b"hello"


def test_single_blocks(store):
    cid = store.put_block(b"an answer")
    assert cid.version == 1 and cid.codec_name == "raw"
    assert store.get_block(cid) == b"an answer"
    with pytest.raises(CorruptBlock):
        store.put_block(b"not that", cid)


def test_unknown_cid_is_block_not_found(store):
    with pytest.raises(BlockNotFound):
        store.get(file_cid(b"never stored"))
    with pytest.raises(BlockNotFound):
        store.open(file_cid(b"never stored"))


def test_a_corrupted_leaf_is_refused_on_read(store):
    data = payload(3 * CHUNK_SIZE)
    root = store.put(data)
    leaf = next(cid for cid, _ in store.walk(root) if cid.codec_name == "raw")
    flip_byte(store.blocks, leaf)
    with pytest.raises(CorruptBlock, match=str(leaf)):
        store.get(root)
    with pytest.raises(CorruptBlock):
        store.open(root).read()
    with pytest.raises(CorruptBlock):
        store.export_car(root, io.BytesIO())


def test_a_corrupted_single_block_payload_is_refused(store):
    cid = store.put(b"label: cat")
    flip_byte(store.blocks, cid)
    with pytest.raises(CorruptBlock):
        store.get(cid)


def test_memory_is_flat_in_file_size(store):
    # 96 MiB streamed through the store must not hold more than a few chunks at once.
    tracemalloc.start()
    try:
        cid = store.put(PatternStream(96 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while adding 96 MiB"
    assert store.size(cid) == 96 << 20


@pytest.mark.parametrize("version", [1, 0])
def test_car_round_trip(store, tmp_path, version):
    data = payload(4 * CHUNK_SIZE + 3)
    root = store.put(data, version)
    car = io.BytesIO()
    store.export_car(root, car)
    other = ContentStore(tmp_path / "other")
    assert other.import_car(io.BytesIO(car.getvalue())) == [root]
    assert other.get(root) == data
    assert [cid for cid, _ in CarReader(io.BytesIO(car.getvalue())).blocks()] == [
        cid for cid, _ in store.walk(root)
    ]


def test_car_with_a_tampered_block_is_refused(store, tmp_path):
    root = store.put(payload(2 * CHUNK_SIZE + 1))
    buf = io.BytesIO()
    store.export_car(root, buf)
    car = bytearray(buf.getvalue())
    car[-10] ^= 0xFF
    with pytest.raises(CorruptBlock):
        ContentStore(tmp_path / "other").import_car(io.BytesIO(bytes(car)))


def test_malformed_cars_are_refused(store):
    with pytest.raises(CarFormatError):
        store.import_car(io.BytesIO(b""))
    with pytest.raises(CarFormatError):
        store.import_car(io.BytesIO(b"\x05hello"))
    header = encode_header([file_cid(b"x")])
    with pytest.raises(CarFormatError, match="truncated"):
        store.import_car(io.BytesIO(header + encode_varint(100) + b"\x01\x55"))
    with pytest.raises(CarFormatError, match="not among its blocks"):
        store.import_car(io.BytesIO(header))


@pytest.mark.parametrize("version", [1, 0])
def test_our_car_is_read_by_ipld_car_and_unixfs_exporter(store, tmp_path, version):
    data = payload(3 * CHUNK_SIZE + 99, seed=b"car-out")
    root = store.put(data, version)
    path = tmp_path / "out.car"
    with open(path, "wb") as out:
        store.export_car(root, out)
    result = node_json("car-read", str(path))
    assert result["roots"] == [str(root)]
    assert result["blocks"] == [str(cid) for cid, _ in store.walk(root)]
    assert (result["size"], result["sha256"]) == (len(data), _sha256(data))


@pytest.mark.parametrize("version", [1, 0])
def test_we_import_a_car_written_by_ipld_car(store, tmp_path, version):
    data = payload(2 * CHUNK_SIZE + 5, seed=b"car-in")
    source = tmp_path / "src"
    source.write_bytes(data)
    car = tmp_path / "in.car"
    root = CID.parse(node_check("car-make", str(source), str(version), str(car)))
    with open(car, "rb") as src:
        assert store.import_car(src) == [root]
    assert store.get(root) == data


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_independent_car_reader_does_refuse_a_tampered_block(store, tmp_path):
    # The node checker must be able to fail, or the tests above would prove nothing.
    root = store.put(payload(2 * CHUNK_SIZE + 1, seed=b"tamper"))
    buf = io.BytesIO()
    store.export_car(root, buf)
    car = bytearray(buf.getvalue())
    car[-10] ^= 0xFF
    path = tmp_path / "tampered.car"
    path.write_bytes(bytes(car))
    with pytest.raises(AssertionError, match="does not hash"):
        node_json("car-read", str(path))
