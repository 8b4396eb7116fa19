"""kempelen.protocol.settlement: manifests built, parsed, verified, claimed from (no chain here).

Proofs are cross-checked against npm @openzeppelin/merkle-tree (tests/backend/merkle_js), the
arithmetic with hypothesis over random settlement histories, and every rule of
docs/settlement.md ("Settlement manifest") with a tampered manifest that verify_manifest must flag.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_merkle import _node

from kempelen.ipfs.unixfs import file_cid
from kempelen.protocol.cid import CID, raw_cid
from kempelen.protocol.manifest import ManifestError, canonical_json
from kempelen.protocol.merkle import EARNINGS_ENCODING, StandardMerkleTree, verify
from kempelen.protocol.sealed import SettledBook
from kempelen.protocol.settlement import (
    FORMAT,
    ManifestAnswer,
    NotInSettlement,
    SettlementManifest,
    SettlementManifestError,
    build_settlement,
    claim_for,
    verify_manifest,
)
from kempelen.protocol.signing import (
    Answer,
    Domain,
    SettledWord,
    Settlement,
    address_of,
    answer_digest,
    sign,
)

DOMAIN = Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
TOKEN = "0x0000000000000000000000000000000000000000"
REWARD = 10_000
KEYS = ["0x" + bytes([i]).hex() * 32 for i in range(1, 9)]
WORKERS = [address_of(k) for k in KEYS]


def signed(key: str, task_index: int, batch_id: int = 7, domain: Domain = DOMAIN, text: str = "") -> ManifestAnswer:
    payload = canonical_json({"label": text or f"task {task_index}"})
    answer = Answer(batch_id, task_index, answer_digest(payload), address_of(key))
    return ManifestAnswer.of(answer, sign(domain.digest(answer.struct_hash()), key))


def build(previous=None, answers=(), **terms):
    terms = {"domain": DOMAIN, "batch_id": 7, "token": TOKEN, "reward": REWARD, "cid_of": file_cid, **terms}
    return build_settlement(previous, answers, **terms)


def test_first_settlement_pays_reward_per_answer_and_signs_the_tree_root():
    answers = [signed(KEYS[1], 4), signed(KEYS[0], 2), signed(KEYS[1], 0), signed(KEYS[0], 200)]
    settlement, manifest = build(None, answers)

    assert manifest.sequence == settlement.sequence == 1 and manifest.previous is None
    assert manifest.earnings == {WORKERS[0]: 2 * REWARD, WORKERS[1]: 2 * REWARD}
    assert settlement.cumulative_total == manifest.cumulative_total == 4 * REWARD
    assert settlement.root == manifest.root == manifest.tree.root
    assert settlement.manifest_cid == file_cid(manifest.to_json()).to_bytes()
    assert [a.key for a in manifest.answers] == sorted((w.lower(), t) for w, t in
                                                       [(WORKERS[1], 4), (WORKERS[0], 2), (WORKERS[1], 0),
                                                        (WORKERS[0], 200)])
    assert settlement.answer_count() == 4
    assert {(w.worker, t) for w in settlement.settled for t in w.task_indexes()} == {
        (WORKERS[0], 2), (WORKERS[0], 200), (WORKERS[1], 0), (WORKERS[1], 4)}
    assert verify_manifest(manifest, settlement=settlement, domain=DOMAIN, reward=REWARD, token=TOKEN,
                           task_count=201) == []


def test_second_settlement_is_cumulative_and_names_the_first():
    _, first = build(None, [signed(KEYS[0], 0), signed(KEYS[1], 0)])
    settlement, second = build(first, [signed(KEYS[0], 1), signed(KEYS[2], 5)])

    assert second.sequence == 2
    assert second.previous == str(file_cid(first.to_json()))
    assert second.earnings == {WORKERS[0]: 2 * REWARD, WORKERS[1]: REWARD, WORKERS[2]: REWARD}
    assert second.cumulative_total == 4 * REWARD and len(second.answers) == 2
    assert claim_for(second, WORKERS[1])[0] == REWARD  # carried over without new answers
    assert verify_manifest(second, first, settlement=settlement, previous_cid=second.previous) == []


def test_later_settlement_restates_earlier_words_and_still_verifies():
    """ISettlement's sealed settled words: a settlement paying a worker settled before restates
    every earlier word of it (bits 0 where nothing is new); such entries pay nothing, and
    verify_manifest judges the settlement by the entries that do."""
    first_settlement, first = build(None, [signed(KEYS[0], 0), signed(KEYS[0], 200), signed(KEYS[1], 0)])
    _, second = build(first, [signed(KEYS[0], 1), signed(KEYS[2], 5)])
    book = SettledBook.of(first_settlement.settled)
    posted = second.settlement(file_cid(second.to_json()), book)
    assert {(w.worker, w.word_index, w.bits) for w in posted.settled} == {
        (WORKERS[0], 0, 0b10), (WORKERS[0], 1, 0), (WORKERS[2], 0, 1 << 5)}
    earlier = {(WORKERS[0], 0): 1, (WORKERS[0], 1): 1 << 8}  # settle's `before`, per entry
    assert book.before(posted.settled) == [earlier.get((w.worker, w.word_index), 0) for w in posted.settled]
    unrestated = second.settlement(file_cid(second.to_json()))
    assert posted.answer_count() == unrestated.answer_count() == 2
    assert posted.struct_hash() != unrestated.struct_hash()  # the requester signs the restating entries too
    assert verify_manifest(second, first, settlement=posted, previous_cid=second.previous) == []
    paying = tuple(SettledWord(w.worker, w.word_index, w.bits or 1) for w in posted.settled)  # restating entry pays
    problems = verify_manifest(second, first, settlement=Settlement(**{**posted.__dict__, "settled": paying}))
    assert any("settled words" in p for p in problems), problems


def test_manifest_json_is_canonical_and_round_trips():
    _, manifest = build(None, [signed(KEYS[0], 3), signed(KEYS[3], 1)])
    data = manifest.to_json()
    assert data == canonical_json(json.loads(data))
    document = json.loads(data)
    assert document["format"] == FORMAT
    assert document["reward"] == str(REWARD) and document["cumulativeTotal"] == str(2 * REWARD)
    assert document["earnings"] == {WORKERS[0]: str(REWARD), WORKERS[3]: str(REWARD)}
    assert document["answers"][0]["answerCid"] == str(raw_cid(manifest.answers[0].answer_digest))
    assert document["tree"]["leafEncoding"] == list(EARNINGS_ENCODING)
    parsed = SettlementManifest.from_json(data)
    assert parsed == manifest
    assert parsed.to_json() == data


def test_claims_verify_and_equal_openzeppelin_proofs():
    rng = random.Random(5)
    answers = [signed(KEYS[rng.randrange(8)], t) for t in range(40)]
    _, manifest = build(None, answers)
    dump = manifest.to_json()
    theirs = _node("load", json.loads(dump)["tree"])
    assert theirs["valid"] is True and theirs["root"] == "0x" + manifest.root.hex()
    for worker in manifest.earnings:
        cumulative, proof = claim_for(manifest, worker.lower())
        assert cumulative == manifest.earnings[worker]
        assert verify(manifest.root, EARNINGS_ENCODING, (worker, cumulative), proof)
        index = manifest.tree.index_of((worker, cumulative))
        assert ["0x" + p.hex() for p in proof] == theirs["proofs"][index]
        assert not verify(manifest.root, EARNINGS_ENCODING, (worker, cumulative + REWARD), proof)
    with pytest.raises(NotInSettlement, match="earned nothing"):
        claim_for(manifest, "0x" + "ee" * 20)
    with pytest.raises(SettlementManifestError, match="not an address"):
        claim_for(manifest, "alice")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 400)), max_size=12), min_size=1, max_size=4),
       st.integers(1, 10**24))
def test_random_histories_stay_consistent(rounds, reward):
    """Over any sequence of settlements: earnings = reward x answers paid so far, totals add up,
    every manifest verifies against its predecessor and survives a JSON round trip."""
    previous, paid = None, set()
    for round_answers in rounds:
        fresh = {(w, t) for w, t in round_answers if (w, t) not in paid}
        if not fresh:
            continue
        settlement, manifest = build(previous, [signed(KEYS[w], t) for w, t in fresh], reward=reward)
        paid |= fresh
        manifest = SettlementManifest.from_json(manifest.to_json())
        assert verify_manifest(manifest, previous, settlement=settlement, reward=reward) == []
        expected = {}
        for w, _ in paid:
            expected[WORKERS[w]] = expected.get(WORKERS[w], 0) + reward
        assert manifest.earnings == expected
        assert manifest.cumulative_total == settlement.cumulative_total == reward * len(paid)
        for worker, amount in expected.items():
            assert verify(settlement.root, EARNINGS_ENCODING, (worker, amount), claim_for(manifest, worker)[1])
        previous = manifest


# ------------------------------------------------------------------------------ the builder refuses


def test_builder_refuses_what_the_escrow_or_an_auditor_would():
    _, first = build(None, [signed(KEYS[0], 0)])
    forged = signed(KEYS[1], 1)
    forged = ManifestAnswer(WORKERS[2], forged.task_index, forged.answer_digest, forged.signature)
    cases = [
        (lambda: build(None, []), "nothing to settle"),
        (lambda: build(None, [signed(KEYS[0], 0), signed(KEYS[0], 0, text="other")]), "settled twice"),
        (lambda: build(first, [signed(KEYS[0], 0, text="again")]), "settled twice"),
        (lambda: build(None, [forged]), "recovers to"),
        (lambda: build(None, [signed(KEYS[0], 0, batch_id=8)]), "recovers to"),  # signed for another batch
        (lambda: build(None, [signed(KEYS[0], 0, domain=Domain(1, DOMAIN.escrow))]), "recovers to"),
        (lambda: build(first, [signed(KEYS[0], 1)], reward=REWARD + 1), "previous manifest is for reward"),
        (lambda: build(first, [signed(KEYS[0], 1, batch_id=8)], batch_id=8), "previous manifest is for batch"),
        (lambda: build(first, [signed(KEYS[0], 1)], sequence=1), "sequence 1 must be above"),
        (lambda: build(None, [signed(KEYS[0], 1)], reward=0), "reward must be positive"),
        (lambda: build(None, [signed(KEYS[0], 1)], previous_cid="bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"),
         "without the previous manifest"),
        (lambda: build(None, ["not an answer"]), "not a signed answer"),
    ]
    for call, message in cases:
        with pytest.raises(SettlementManifestError, match=message):
            call()


def test_builder_accepts_answer_signature_pairs_and_signed_answer_likes():
    one = signed(KEYS[0], 0)

    class Signed:  # the shape of kempelen.sdk.answers.SignedAnswer
        answer = one.answer(7)
        signature = one.signature

    a = build(None, [one])[1]
    b = build(None, [(one.answer(7), one.signature)])[1]
    c = build(None, [Signed()])[1]
    assert a.to_json() == b.to_json() == c.to_json()


# ------------------------------------------------------------------------------ verify flags tampering


def _tamper(manifest: SettlementManifest, edit) -> SettlementManifest:
    document = json.loads(manifest.to_json())
    edit(document)
    return SettlementManifest.from_json(canonical_json(document))


@pytest.fixture
def pair():
    _, first = build(None, [signed(KEYS[0], 0), signed(KEYS[1], 0)])
    settlement, second = build(first, [signed(KEYS[0], 1), signed(KEYS[2], 2)])
    return first, second, settlement


def _retree(document, earnings):
    document["earnings"] = {w: str(v) for w, v in earnings.items()}
    document["tree"] = StandardMerkleTree.of(sorted(earnings.items()), EARNINGS_ENCODING).dump()
    document["cumulativeTotal"] = str(sum(earnings.values()))


@pytest.mark.parametrize("edit, problem", [
    (lambda d: d["earnings"].update({WORKERS[0]: str(9 * REWARD)}), "earnings of"),
    (lambda d: _retree(d, {WORKERS[0]: 9 * REWARD, WORKERS[1]: REWARD, WORKERS[2]: REWARD}), "earnings of"),
    (lambda d: d.update(cumulativeTotal="1"), "cumulativeTotal 1"),
    (lambda d: d["answers"].reverse(), "not sorted"),
    (lambda d: d["answers"].append(d["answers"][0]), "listed twice"),
    (lambda d: d["answers"][0].update(signature=d["answers"][1]["signature"]), "recovers to"),
    (lambda d: d["answers"][0].update(answerDigest="0x" + "11" * 32), "recovers to"),
    (lambda d: d["answers"][0].update(answerCid=str(raw_cid(b"\x11" * 32))), "not the raw CID"),
    (lambda d: d["answers"][0].update(taskIndex=0), "already paid by the previous settlement"),
    (lambda d: d.update(previous=None), "names no previous manifest"),
    (lambda d: d.update(previous="bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"), "names previous"),
    (lambda d: d.update(sequence=1), "not above the previous"),
    (lambda d: d.update(reward=str(REWARD * 2)), "reward"),
    (lambda d: d.update(token="0x" + "22" * 20), "token"),
    (lambda d: d.update(escrow="0x" + "22" * 20), "recovers to"),
    (lambda d: d["tree"].update(StandardMerkleTree.of(
        [(WORKERS[0], 2 * REWARD), (WORKERS[1], REWARD), (WORKERS[2], REWARD)], EARNINGS_ENCODING,
        sort_leaves=False).dump()), "standard tree root"),
], ids=["earnings", "earnings_with_tree", "total", "unsorted", "twice", "signature", "digest", "cid", "repeat",
        "no_previous", "wrong_previous", "sequence", "reward", "token", "escrow", "unsorted_leaves"])
def test_verify_flags_each_broken_rule(pair, edit, problem):
    first, second, _ = pair
    tampered = _tamper(second, edit)
    problems = verify_manifest(tampered, first, previous_cid=second.previous)
    assert any(problem in p for p in problems), problems


def test_verify_checks_the_posted_settlement(pair):
    first, second, settlement = pair
    assert verify_manifest(second, first, settlement=settlement) == []
    fields = settlement.__dict__
    wrong = [
        (Settlement(**{**fields, "sequence": 3}), "sequence 2 is not the settlement's 3"),
        (Settlement(**{**fields, "cumulative_total": 1}), "cumulativeTotal"),
        (Settlement(**{**fields, "root": b"\x01" * 32}), "tree root"),
        (Settlement(**{**fields, "settled": settlement.settled[:-1]}), "settled words"),
        (Settlement(**{**fields, "settled": (SettledWord(WORKERS[0], 0, 0b11),) + settlement.settled[1:]}),
         "settled words"),
    ]
    for posted, problem in wrong:
        problems = verify_manifest(second, first, settlement=posted)
        assert any(problem in p for p in problems), (problem, problems)


def test_verify_checks_batch_terms_and_domain(pair):
    first, second, _ = pair
    assert any("batch has only 2 tasks" in p for p in verify_manifest(second, first, task_count=2))
    assert any("not the batch's reward" in p for p in verify_manifest(second, first, reward=1))
    assert any("not the batch's token" in p for p in verify_manifest(second, first, token="0x" + "33" * 20))
    assert any("not chain 1" in p for p in verify_manifest(second, first, domain=Domain(1, DOMAIN.escrow)))
    assert any("was not given" in p for p in verify_manifest(second))
    assert any("no previous manifest" in p for p in verify_manifest(first, second))


# ------------------------------------------------------------------------------ malformed input


def _document() -> dict:
    return json.loads(build(None, [signed(KEYS[0], 0)])[1].to_json())


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(format="kempelen/batch-manifest/1"), "not a Kempelen settlement manifest"),
    (lambda d: d.pop("earnings"), "lacks earnings"),
    (lambda d: d.update(extra=1), "unknown field"),
    (lambda d: d.update(batchId=-1), "batchId must be an integer"),
    (lambda d: d.update(batchId="7"), "batchId must be an integer"),
    (lambda d: d.update(sequence=True), "sequence must be an integer"),
    (lambda d: d.update(sequence=2**32), "sequence must be an integer"),
    (lambda d: d.update(reward=10000), "reward must be a decimal string"),
    (lambda d: d.update(reward="010"), "reward must be a decimal string"),
    (lambda d: d.update(cumulativeTotal=str(2**256)), "cumulativeTotal must be a decimal string"),
    (lambda d: d.update(escrow="0x1234"), "escrow must be a 0x address"),
    (lambda d: d.update(previous="not-a-cid"), "previous"),
    (lambda d: d.update(answers={}), "answers must be a list"),
    (lambda d: d.update(earnings=[]), "earnings must be an object"),
    (lambda d: d["earnings"].update({"bob": "1"}), "earnings key must be a 0x address"),
    (lambda d: d["answers"][0].update(signature="0x1234"), r"signature must be 64 or 65 bytes"),
    (lambda d: d["answers"][0].update(answerDigest="zz"), "answerDigest must be 0x-prefixed hex"),
    (lambda d: d["answers"][0].pop("worker"), r"answers\[0\] lacks worker"),
    (lambda d: d["answers"][0].update(taskIndex=1.5), "taskIndex must be an integer"),
    (lambda d: d["answers"].append("x"), r"answers\[1\] must be an object"),
    (lambda d: d["tree"]["tree"].__setitem__(0, "0x" + "00" * 32), "tree: value .* does not hash to leaf 0"),
    (lambda d: d.update(tree={}), "tree lacks format"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_malformed_manifests_are_refused_with_a_reason(edit, message):
    document = _document()
    edit(document)
    with pytest.raises(SettlementManifestError, match=message):
        SettlementManifest.from_json(canonical_json(document))


def test_not_json_is_a_manifest_error():
    with pytest.raises(ManifestError, match="not JSON"):
        SettlementManifest.from_json(b"\xff{")
    with pytest.raises(ManifestError, match="not a Kempelen settlement manifest"):
        SettlementManifest.from_json(b"[]")


def test_settlement_struct_from_a_parsed_manifest_needs_its_cid():
    settlement, manifest = build(None, [signed(KEYS[0], 0)])
    cid = CID.from_bytes(settlement.manifest_cid)
    again = SettlementManifest.from_json(manifest.to_json()).settlement(str(cid))
    assert again == settlement
    assert again.struct_hash() == settlement.struct_hash()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**260) | st.floats(allow_nan=False) | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_edit_parses_or_raises_a_manifest_error(data):
    """The auditor feeds untrusted bytes to from_json: whatever a field holds, the answer is a
    manifest or a SettlementManifestError, never another exception."""
    document = _document()
    target = document
    path = data.draw(st.lists(st.integers(0, 20), min_size=1, max_size=4))
    for step in path:
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        key = keys[step % len(keys)]
        if isinstance(target[key], (dict, list)) and target[key] and step % 2:
            target = target[key]
            continue
        target[key] = data.draw(_json_values)
        break
    try:
        SettlementManifest.from_json(canonical_json(document))
    except SettlementManifestError:
        pass


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["tree"].__setitem__(0, 2**70), "tree.tree must be a list of 0x hashes"),
    (lambda t: t.update(leafEncoding="address"), "tree.leafEncoding"),
    (lambda t: t["values"][0].update(treeIndex=0.5), "tree.values"),
    (lambda t: t["values"][0].update(value=["0x" + "11" * 20, True]), "does not encode"),
    (lambda t: t.update(extra=[]), "tree has unknown field"),
])
def test_malformed_trees_are_refused_before_hashing(edit, message):
    document = _document()
    edit(document["tree"])
    with pytest.raises(SettlementManifestError, match=message):
        SettlementManifest.from_json(canonical_json(document))
