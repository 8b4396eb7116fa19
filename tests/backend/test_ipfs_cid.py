"""CID parsing, formatting and binary form (kempelen.protocol.cid)."""

import hashlib

import pytest
from kempelen.errors import InvalidCID, KempelenError
from kempelen.protocol.cid import CID, DAG_PB, RAW, raw_cid

EMPTY_V1_RAW = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
EMPTY_V0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
# The same empty-file dag-pb node as CIDv1 (ipfs cid format -v 1 -b base32, published widely).
EMPTY_V0_AS_V1 = "bafybeif7ztnhq65lumvvtr4ekcwd2ifwgm3awq4zfr3srh462rwyinlb4y"


def test_raw_cid_of_empty_payload_is_kubos():
    assert str(raw_cid(hashlib.sha256(b"").digest())) == EMPTY_V1_RAW


def test_raw_cid_of_hello_is_the_published_one():
    # `echo -n hello | ipfs add --cid-version 1` (well-known in IPFS docs and tests)
    cid = raw_cid(hashlib.sha256(b"hello").digest())
    assert str(cid) == "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


@pytest.mark.parametrize("text", [EMPTY_V1_RAW, EMPTY_V0, EMPTY_V0_AS_V1])
def test_string_round_trip(text):
    assert str(CID.parse(text)) == text


def test_fields_of_parsed_cids():
    v1 = CID.parse(EMPTY_V1_RAW)
    assert (v1.version, v1.codec, v1.digest) == (1, RAW, hashlib.sha256(b"").digest())
    v0 = CID.parse(EMPTY_V0)
    assert (v0.version, v0.codec) == (0, DAG_PB)
    assert v0.digest == hashlib.sha256(bytes.fromhex("0a0408021800")).digest()


def test_binary_forms_as_events_carry_them():
    v1 = CID.parse(EMPTY_V1_RAW)
    assert v1.to_bytes() == b"\x01\x55\x12\x20" + v1.digest
    assert CID.from_bytes(v1.to_bytes()) == v1
    v0 = CID.parse(EMPTY_V0)
    assert v0.to_bytes() == b"\x12\x20" + v0.digest  # CIDv0 binary is the bare multihash
    assert CID.from_bytes(v0.to_bytes()) == v0
    assert CID.parse(v0.to_bytes()) == v0
    assert bytes(v1) == v1.to_bytes()


def test_version_conversions():
    v0 = CID.parse(EMPTY_V0)
    assert str(v0.v1()) == EMPTY_V0_AS_V1
    assert v0.v1().v0() == v0
    with pytest.raises(InvalidCID, match="CIDv0 can only name dag-pb"):
        CID.parse(EMPTY_V1_RAW).v0()


def test_base58_multibase_z_and_upper_base32_are_accepted():
    v1 = CID.parse(EMPTY_V1_RAW)
    assert CID.parse("B" + EMPTY_V1_RAW[1:].upper()) == v1
    # zb2rh... is the base58btc form js-ipfs printed for [0, 1, 2] (js-ipfs PR 1591)
    assert CID.parse("zb2rhiNedvrkpYhcrgtpmhKk5UPzcgizgSXaQLYXNY745BmYP") == raw_cid(
        hashlib.sha256(bytes([0, 1, 2])).digest()
    )


def test_cids_are_hashable_values():
    assert len({CID.parse(EMPTY_V0), CID.parse(EMPTY_V0), CID.parse(EMPTY_V0_AS_V1)}) == 2


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "hello",
        "Qm" + "1" * 44,  # right shape, wrong multihash
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQ0",  # '0' is not base58
        EMPTY_V1_RAW[:-3],  # truncated digest
        EMPTY_V1_RAW + "aa",  # trailing bytes
        "bAFKREIHDWDCEFGH4DQKJV67UZCMW7OJEE6XEDZDETOJUZJEVTENXQUVYKU",  # mixed case
        "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",  # dag-cbor codec
        "mAVUSIOOwxEKY/BwUmvv0yJlvuSQnrkHkZJuTTKSVmRt4UrhV",  # base64: unsupported multibase
    ],
)
def test_malformed_cids_raise_a_kempelen_error_with_the_input(bad):
    with pytest.raises(InvalidCID) as info:
        CID.parse(bad)
    assert isinstance(info.value, KempelenError)
    assert str(info.value)


def test_bad_binary_and_bad_fields():
    with pytest.raises(InvalidCID):
        CID.from_bytes(b"\x01\x55\x12\x20" + b"\0" * 31)
    with pytest.raises(InvalidCID, match="sha2-256"):
        CID.from_bytes(b"\x01\x55\x13\x20" + b"\0" * 32)  # sha2-512 code
    with pytest.raises(InvalidCID):
        raw_cid(b"\0" * 31)
    with pytest.raises(InvalidCID):
        CID(0, RAW, b"\0" * 32)
