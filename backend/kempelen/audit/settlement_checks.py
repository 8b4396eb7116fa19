"""Settlement manifests against the chain: checks 2, 3 and 4 for the settlement path.

Each SettlementPosted names its manifest by CID. The auditor fetches it from the content source
(every block hashed against its CID), parses it with kempelen.protocol.settlement and holds it
to the chain: its root, total and answers must be the ones posted; every answer's signature
must recover to its worker (re-verified here, in the audit's recovery pool, like direct
answers); every leaf must be exactly the worker's validly signed, settled answers x reward; and
every claim must be a leaf of the root in force when it was made. The requester's signature
on the settlement itself is recovered from the `settle` calldata, as the escrow did, and must
be the batch's requester's; the calldata's unsigned `before` must be the workers' earlier
settled words (ISettlement's sealed settled words), for every worker whose words were not opened
(the escrow ignores `before` for an opened one). The manifest's own rules
(earnings arithmetic, tree, links between manifests) are judged by the protocol module's
verify_manifest, whose reasons a `settlement_manifest_unsound` finding carries.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from kempelen.audit.content import ContentSource, file_verdict
from kempelen.audit.model import CONTENT, NOTICE, PAYOUTS, SIGNATURES, Finding, SettlementSummary
from kempelen.audit.replay import Replay
from kempelen.audit.scan import SettleCall
from kempelen.audit.settlement_replay import ClaimRef, SettlementRef
from kempelen.errors import InvalidCID, KempelenError
from kempelen.protocol.cid import CID, raw_cid
from kempelen.protocol.settlement import ManifestAnswer, SettlementManifest, verify_manifest
from kempelen.protocol.signing import Domain, SignatureError, recover

SHOWN_PROBLEMS = 6  # reasons quoted in one finding's message

# (batchId, taskIndex, answerDigest, worker) and the signature, as audit.signatures takes them.
SignedItem = tuple[tuple[int, int, bytes, str], bytes]


@dataclass
class LoadedManifest:
    """A settlement and its manifest: parsed, or why not (`problem` is then a finding code)."""

    ref: SettlementRef
    cid: CID | None
    manifest: SettlementManifest | None
    problem: str | None = None


def load_manifests(source: ContentSource, settlements: list[SettlementRef]) -> tuple[list[LoadedManifest],
                                                                                     list[Finding]]:
    """Fetch, hash-check and parse the manifest of every settlement; findings for those that fail."""
    loaded, findings = [], []
    for ref in settlements:
        where = _where(ref)
        try:
            cid = CID.from_bytes(ref.manifest_raw)
        except InvalidCID as exc:
            findings.append(Finding(CONTENT, "settlement_manifest_invalid", f"settlement {ref.sequence}: manifest "
                                    f"0x{ref.manifest_raw.hex()} is not a CID ({exc})", **where))
            loaded.append(LoadedManifest(ref, None, None, "settlement_manifest_invalid"))
            continue
        verdict = file_verdict(source, cid)
        if verdict:
            code = "settlement_manifest_" + verdict.split(":", 1)[0]
            findings.append(Finding(CONTENT, code, f"settlement {ref.sequence}: manifest {cid}: {verdict}", **where))
            loaded.append(LoadedManifest(ref, cid, None, code))
            continue
        try:
            manifest = SettlementManifest.from_json(source.read_file(cid))
        except KempelenError as exc:
            findings.append(Finding(CONTENT, "settlement_manifest_invalid", f"settlement {ref.sequence}: manifest "
                                    f"{cid}: {exc}", **where))
            loaded.append(LoadedManifest(ref, cid, None, "settlement_manifest_invalid"))
            continue
        loaded.append(LoadedManifest(ref, cid, manifest))
    return loaded, findings


def signature_items(loaded: list[LoadedManifest]) -> tuple[list[SignedItem], list[tuple[SettlementRef,
                                                                                       ManifestAnswer]]]:
    """Every manifest answer as an item for the recovery pool, and whose it is."""
    items, owners = [], []
    for entry in loaded:
        if entry.manifest is None:
            continue
        for answer in entry.manifest.answers:
            # Signed for the batch the chain says it settled: a manifest of another batch fails here too.
            items.append(((entry.ref.batch, answer.task_index, answer.answer_digest, answer.worker), answer.signature))
            owners.append((entry.ref, answer))
    return items, owners


def answer_cids(loaded: list[LoadedManifest]) -> list[CID]:
    """CIDs of the settled answers' payloads (raw CIDs of their digests, as on the direct path)."""
    return [raw_cid(a.answer_digest) for entry in loaded if entry.manifest for a in entry.manifest.answers]


def settlement_findings(replay: Replay, loaded: list[LoadedManifest], owners: list[tuple[SettlementRef,
                        ManifestAnswer]], signers: list[str], verdicts: dict[CID, str | None], chain_id: int,
                        escrow: str) -> tuple[list[Finding], list[SettlementSummary]]:
    """Findings of every loaded manifest against the chain, and the report's list of settlements."""
    findings: list[Finding] = []
    signed_ok: set[tuple[int, int, str, int]] = set()  # (batch, sequence, worker, task) that recover
    for (ref, answer), signer in zip(owners, signers):
        where = {**_where(ref), "task": answer.task_index, "worker": answer.worker}
        if signer.startswith("error:"):
            findings.append(Finding(SIGNATURES, "settlement_unreadable_signature", f"settlement {ref.sequence}: "
                                    f"signature {signer[7:]}", **where))
        elif signer != answer.worker:
            findings.append(Finding(SIGNATURES, "settlement_bad_signature", f"settlement {ref.sequence}: signature "
                                    f"recovers to {signer}, not the worker (or was made for another batch, chain "
                                    "or escrow)", **where))
        else:
            signed_ok.add((ref.batch, ref.sequence, answer.worker, answer.task_index))
        verdict = verdicts.get(raw_cid(answer.answer_digest))
        if verdict:
            findings.append(Finding(CONTENT, "answer_" + verdict.split(":", 1)[0], f"settled answer payload "
                                    f"{raw_cid(answer.answer_digest)}: {verdict}", **where))
    domain = Domain(chain_id, escrow)
    by_ref = {id(entry.ref): entry for entry in loaded}
    backed: Counter[tuple[int, str]] = Counter()  # (batch, worker) -> signed, settled answers so far
    complete: dict[int, bool] = {}  # batch -> every manifest so far parsed
    for entry in loaded:
        ref, manifest = entry.ref, entry.manifest
        batch_complete = complete.get(ref.batch, True) and manifest is not None
        complete[ref.batch] = batch_complete
        if manifest is not None:
            findings += _against_chain(ref, manifest, chain_id, escrow)
            on_chain = set(ref.pairs())
            for answer in manifest.answers:
                if (answer.worker, answer.task_index) in on_chain and (
                        ref.batch, ref.sequence, answer.worker, answer.task_index) in signed_ok:
                    backed[(ref.batch, answer.worker)] += 1
            previous = by_ref.get(id(ref.previous)) if ref.previous is not None else None
            if ref.previous is not None and (previous is None or previous.manifest is None):
                findings.append(Finding(CONTENT, "settlement_unverifiable", f"settlement {ref.sequence}: earnings "
                                        "not checked, the previous settlement's manifest is unavailable", NOTICE,
                                        **_where(ref)))
            else:
                findings += _unsound(ref, manifest, previous, domain, replay)
            if batch_complete:
                findings += _leaf_findings(ref, manifest, backed, replay.batches[ref.batch].totals.reward)
    flagged = {f.tx for f in findings if f.severity != NOTICE}
    summaries = [SettlementSummary(
        batch=ref.batch, sequence=ref.sequence, block=ref.event.block_number, tx=ref.event.transaction_hash,
        poster=ref.poster, root="0x" + ref.root.hex(), cumulative_total=ref.cumulative_total, amount=ref.amount,
        relay_fees=ref.relay_fees, answers=ref.answers,
        manifest_cid=str(entry.cid) if entry.cid else "0x" + ref.manifest_raw.hex(),
        manifest_verified=entry.manifest is not None and ref.event.transaction_hash not in flagged)
        for entry in loaded for ref in (entry.ref,)]
    return findings, summaries


def claim_findings(claims: list[ClaimRef], loaded: list[LoadedManifest]) -> list[Finding]:
    """Every claim must be the worker's leaf in the manifest of the root in force when it was made."""
    by_ref = {id(entry.ref): entry.manifest for entry in loaded}
    findings = []
    for claim in claims:
        manifest = by_ref.get(id(claim.settlement)) if claim.settlement is not None else None
        if manifest is None:
            continue  # no settlement (replay reports it) or no manifest (already reported)
        leaves = {worker.lower(): int(amount) for worker, amount in manifest.tree.values}
        leaf = leaves.get(claim.worker.lower())
        if leaf != claim.cumulative:
            e = claim.event
            findings.append(Finding(PAYOUTS, "claim_not_a_leaf", f"claim up to {claim.cumulative}, but the worker's "
                                    f"leaf in settlement {claim.settlement.sequence}'s manifest is {leaf}",
                                    block=e.block_number, tx=e.transaction_hash, batch=claim.batch,
                                    worker=claim.worker))
    return findings


def settle_call_findings(settlements: list[SettlementRef], settle_calls: dict[str, list[SettleCall] | None],
                         replay: Replay, chain_id: int, escrow: str) -> list[Finding]:
    """Each settlement as its `settle` call carried it: signed by its batch's requester (recovered
    from the calldata that posted it under this chain's and escrow's domain, not taken from the
    escrow's word), and with `before`, which nobody signs, one word per entry, equal to each
    entry's worker's bits settled earlier in that word as the batch's AnswersSettled events give
    them (the escrow held `before` to the worker's digest; a different one means it accepted words
    that were not the worker's, or the replay missed a settlement). Entries of a worker whose words
    were opened are not compared: the escrow read its stored words and ignored `before` there."""
    domain, findings = Domain(chain_id, escrow), []
    for ref in settlements:
        calls = settle_calls.get(ref.event.transaction_hash)
        if calls is None:
            findings.append(Finding(SIGNATURES, "settlement_calldata_unavailable", f"settlement {ref.sequence}: no "
                                    "settle call to the escrow found in its transaction: the requester's signature "
                                    "was not verified", **_where(ref)))
            continue
        posted = [call for call in calls if (call.settlement.batch_id, call.settlement.sequence) == (ref.batch,
                                                                                                   ref.sequence)]
        if not posted or not _is_posted(posted[0].settlement, ref):
            findings.append(Finding(SIGNATURES, "settlement_not_in_calldata", f"settlement {ref.sequence} as logged "
                                    "is not the one its transaction's settle call carries", **_where(ref)))
            continue
        settlement, before, signature = posted[0]
        requester = replay.batches[ref.batch].totals.requester
        try:
            signer = recover(domain.digest(settlement.struct_hash()), signature)
        except SignatureError as exc:
            signer = f"nobody ({exc})"
        if signer != requester:
            findings.append(Finding(SIGNATURES, "settlement_bad_requester_signature", f"settlement {ref.sequence} is "
                                    f"signed by {signer}, not the batch's requester {requester}", **_where(ref)))
        wrong = [(w.worker, w.word_index, b, p) for w, b, p in zip(ref.words, before, ref.prior)
                 if p is not None and b != p]  # None: an opened worker's entry, `before` ignored
        if len(before) != len(ref.prior) or wrong:
            shown = "; ".join(f"{worker} word {index}: {b:#x}, its settled bits {p:#x}"
                              for worker, index, b, p in wrong[:3]) or f"{len(before)} for {len(ref.prior)} entries"
            findings.append(Finding(PAYOUTS, "settlement_prior_mismatch", f"settlement {ref.sequence} was posted "
                                    f"with earlier words (`before`) that are not the workers' settled words: {shown}",
                                    **_where(ref), worker=wrong[0][0] if wrong else None))
    return findings


def _is_posted(settlement, ref: SettlementRef) -> bool:
    """The calldata's settlement is the logged one: root, total, manifest and answers."""
    return (settlement.root, settlement.cumulative_total, settlement.manifest_cid, settlement.settled) == (
        ref.root, ref.cumulative_total, ref.manifest_raw, ref.words)


def _where(ref: SettlementRef) -> dict:
    return {"block": ref.event.block_number, "tx": ref.event.transaction_hash, "batch": ref.batch}


def _against_chain(ref: SettlementRef, manifest: SettlementManifest, chain_id: int, escrow: str) -> list[Finding]:
    """What the chain posted against what the manifest says: header, root, total, answers."""
    findings, where = [], _where(ref)
    header = (manifest.chain_id, manifest.escrow.lower(), manifest.batch_id, manifest.sequence)
    if header != (chain_id, escrow.lower(), ref.batch, ref.sequence):
        findings.append(Finding(CONTENT, "settlement_manifest_mismatch", f"settlement {ref.sequence}: manifest is "
                                f"for chain {header[0]}, escrow {manifest.escrow}, batch {header[2]}, sequence "
                                f"{header[3]}", **where))
    if manifest.root != ref.root:
        findings.append(Finding(CONTENT, "settlement_root_mismatch", f"settlement {ref.sequence}: the manifest's "
                                f"tree root 0x{manifest.root.hex()} is not the root posted, 0x{ref.root.hex()}: "
                                "claims are proven against leaves nobody can see", **where))
    if manifest.cumulative_total != ref.cumulative_total:
        findings.append(Finding(CONTENT, "settlement_total_mismatch", f"settlement {ref.sequence}: manifest's "
                                f"cumulativeTotal {manifest.cumulative_total} is not the posted "
                                f"{ref.cumulative_total}", **where))
    listed = {(a.worker, a.task_index) for a in manifest.answers}
    posted = set(ref.pairs())
    if listed != posted:
        extra, missing = sorted(listed - posted), sorted(posted - listed)
        findings.append(Finding(CONTENT, "settlement_answers_mismatch", f"settlement {ref.sequence}: the manifest "
                                f"lists {len(extra)} answers AnswersSettled does not (e.g. {extra[:3]}) and "
                                f"misses {len(missing)} it does (e.g. {missing[:3]})", **where))
    return findings


def _unsound(ref: SettlementRef, manifest: SettlementManifest, previous: LoadedManifest | None, domain: Domain,
             replay: Replay) -> list[Finding]:
    """The protocol module's verdict on the manifest's own rules, given the batch's terms."""
    totals = replay.batches[ref.batch].totals
    problems = verify_manifest(
        manifest, previous.manifest if previous else None, domain=domain, reward=totals.reward,
        token=totals.token, task_count=totals.task_count,
        previous_cid=str(previous.cid) if previous and previous.cid else None)
    if not problems:
        return []
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    more = f"; and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    return [Finding(CONTENT, "settlement_manifest_unsound", f"settlement {ref.sequence}: {shown}{more}",
                    **_where(ref))]


def _leaf_findings(ref: SettlementRef, manifest: SettlementManifest, backed: Counter, reward: int) -> list[Finding]:
    """Each leaf must be exactly reward x the worker's validly signed answers settled so far."""
    findings = []
    leaves = {}
    for worker, amount in manifest.tree.values:
        leaves[worker.lower()] = (worker, int(amount))
    workers = {w.lower(): w for (b, w) in backed if b == ref.batch}
    for key in sorted(set(leaves) | set(workers)):
        worker, leaf = leaves.get(key, (workers.get(key), 0))
        owed = backed[(ref.batch, workers.get(key, worker))] * reward
        if leaf == owed:
            continue
        code, harm = (("leaf_above_signed_answers", "it could be paid for answers it did not sign") if leaf > owed
                      else ("leaf_below_signed_answers", "it cannot claim all it earned"))
        findings.append(Finding(PAYOUTS, code, f"settlement {ref.sequence}: leaf of {leaf}, but the worker's "
                                f"signed, settled answers earned {owed}: {harm}", **_where(ref), worker=worker))
    return findings
