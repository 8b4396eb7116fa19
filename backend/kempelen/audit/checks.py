"""The checks that compare the replay with the chain's state, calldata and content. Pure.

Check 1's end-of-history balance sheet (settlement pools included), check 3 (signatures, from calldata the auditor
decoded itself), check 4 (content verdicts) and check 5 (reputation counters). Checks 1
(event by event), 2 and 6 happen during the replay (replay.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from kempelen.audit.model import (
    CONTENT,
    ETH,
    MONEY,
    NOTICE,
    REPUTATION,
    SIGNATURES,
    Finding,
    TokenTotals,
)
from kempelen.audit.replay import ReasonRef, Replay, SubmittedAnswer
from kempelen.audit.scan import CalldataAnswer, ChainHistory, ChainState
from kempelen.errors import InvalidCID
from kempelen.protocol.cid import CID, raw_cid
from kempelen.protocol.events import Event, recorded_outcomes
from kempelen.protocol.manifest import BatchManifest, ManifestError
from kempelen.protocol.signing import Answer, Domain, SignatureError, recover

Verdicts = dict[CID, str | None]


# -- check 1: the balance sheet at the audited block -----------------------------------


def balance_sheet(replay: Replay, state: ChainState) -> tuple[dict[str, TokenTotals], list[Finding]]:
    findings: list[Finding] = []
    tokens = dict(replay.tokens)
    for token, balance in state.balances.items():
        if token not in tokens and balance:
            tokens[token] = TokenTotals(token)
    owed: defaultdict[str, int] = defaultdict(int)
    for ledger in replay.batches.values():
        owed[ledger.totals.token] += ledger.totals.locked_replayed
    for (token, _account), amount in replay.accounts.items():
        owed[token] += amount
    for token, totals in sorted(tokens.items()):
        totals.symbol, totals.decimals = state.token_meta.get(token, ("?", 18))
        totals.balance = state.balances.get(token, 0)
        totals.owed_replayed = owed[token]
        findings.extend(_token_findings(totals))
    findings.extend(_batch_findings(replay, state))
    findings.extend(_settlement_state_findings(replay, state))
    for (token, account), onchain in sorted(state.accounts.items()):
        replayed = replay.accounts.get((token, account), 0)
        if onchain is not None and onchain != replayed:
            findings.append(Finding(MONEY, "account_mismatch", f"escrow says {account} is owed {onchain} "
                                    f"of {_name(token)}; its events credit {replayed}", worker=account))
    return tokens, findings


def _name(token: str) -> str:
    return "ETH" if token == ETH else token


def _token_findings(t: TokenTotals) -> list[Finding]:
    findings = []
    flows = (f"deposits {t.deposited} + top-ups {t.topped_up} + bonuses {t.bonuses} - withdrawals "
             f"{t.withdrawn} - refunds {t.reclaimed} = {t.expected_balance}")
    if t.deficit:
        findings.append(Finding(MONEY, "balance_deficit", f"{_name(t.token)}: escrow holds {t.balance}, "
                                f"but {flows}: {t.deficit} missing"))
    if t.surplus:
        findings.append(Finding(MONEY, "surplus", f"{_name(t.token)}: escrow holds {t.surplus} more than "
                                f"its events put in ({flows}); owed to nobody, e.g. forced in", NOTICE))
    return findings


def _batch_findings(replay: Replay, state: ChainState) -> list[Finding]:
    findings = []
    for batch_id, ledger in sorted(replay.batches.items()):
        totals = ledger.totals
        record = state.batches.get(batch_id)
        if record is None:
            continue
        funds, pending = record
        pool = _pool_onchain(batch_id, state)
        if pool is None:
            continue
        totals.locked_onchain = funds + pending * totals.reward + pool
        accounted = totals.locked_onchain + totals.paid + totals.fees + totals.refunded
        if accounted != totals.deposited:
            findings.append(Finding(
                MONEY, "batch_unbalanced",
                f"batch {batch_id}: deposited {totals.deposited} != locked {totals.locked_onchain} + paid "
                f"{totals.paid} + fees {totals.fees} + refunded {totals.refunded} "
                f"({totals.deposited - accounted:+} unaccounted)", batch=batch_id))
    return findings


def _pool_onchain(batch_id: int, state: ChainState) -> int | None:
    """The batch's claimable pool by the escrow's views: settled total minus what workers claimed
    (0 without settlements; None when the escrow cannot say)."""
    if batch_id not in state.settlements:
        return 0
    settlement = state.settlements[batch_id]
    claims = [e for (b, _), e in state.earnings.items() if b == batch_id]
    if settlement is None or any(e is None for e in claims):
        return None
    return settlement[2] - sum(claimed for _, claimed in claims)


def _settlement_state_findings(replay: Replay, state: ChainState) -> list[Finding]:
    """settlementOf and earningsOf at the audited block against the replayed settlements and claims."""
    findings = []
    s = replay.settlement
    for batch_id, latest in sorted(s.latest.items()):
        onchain = state.settlements.get(batch_id)
        replayed = (latest.sequence, latest.root, latest.cumulative_total)
        if onchain is not None and tuple(onchain) != replayed:
            findings.append(Finding(MONEY, "settlement_state_mismatch", f"escrow's settlementOf({batch_id}) is "
                                    f"(sequence {onchain[0]}, root 0x{onchain[1].hex()}, total {onchain[2]}); "
                                    f"its events leave (sequence {replayed[0]}, root 0x{replayed[1].hex()}, total "
                                    f"{replayed[2]})", batch=batch_id))
    for (batch_id, worker), onchain in sorted(state.earnings.items()):
        ledger = replay.batches.get(batch_id)
        if onchain is None or ledger is None:
            continue
        replayed = (s.settled_count[(batch_id, worker)] * ledger.totals.reward, s.claimed[(batch_id, worker)])
        if tuple(onchain) != replayed:
            findings.append(Finding(MONEY, "earnings_mismatch", f"escrow's earningsOf says (settled, claimed) = "
                                    f"{tuple(onchain)}; its events give {replayed}", batch=batch_id, worker=worker))
    return findings


# -- check 3: signatures, from calldata -------------------------------------------------


def pair_signatures(
    history: ChainHistory, submitted: list[SubmittedAnswer]
) -> tuple[list[CalldataAnswer], list[SubmittedAnswer], list[Finding]]:
    """Each accepted answer with the signature its transaction's calldata carried for it.

    Paired by content, (batchId, taskIndex, answerDigest, worker): AnswersSubmitted names a
    worker's answers per 96-task group and is logged when the group closes, so neither its
    position nor its log index follows the calldata. Copies of one answer in one call (the
    escrow accepts the first it can and skips the rest) are told apart by whose signature
    recovers to the worker: any of them shows the worker signed exactly this answer.
    """
    by_tx: defaultdict[str, list[SubmittedAnswer]] = defaultdict(list)
    for answer in submitted:
        by_tx[answer.tx].append(answer)
    domain = Domain(history.chain_id, history.escrow)
    items: list[CalldataAnswer] = []
    owners: list[SubmittedAnswer] = []
    findings: list[Finding] = []
    for tx, answers in by_tx.items():
        calldata = history.submissions.get(tx)
        if calldata is None:
            findings.extend(_finding(SIGNATURES, "calldata_unavailable", "no submitAnswers call to the escrow "
                                     "found in this transaction: signature not verified", a) for a in answers)
            continue
        unused: defaultdict[tuple, list[bytes]] = defaultdict(list)
        for relayed, signature in calldata:
            unused[relayed].append(signature)
        for answer in answers:
            relayed = (answer.batch, answer.task, answer.digest, answer.worker)
            candidates = unused.get(relayed)
            if not candidates:
                findings.append(_finding(SIGNATURES, "answer_not_in_calldata", "accepted answer does not "
                                         "appear in the transaction's submitAnswers calldata", answer))
                continue
            items.append((relayed, candidates.pop(_signed_copy(domain, relayed, candidates))))
            owners.append(answer)
    return items, owners, findings


def _signed_copy(domain: Domain, relayed: tuple, signatures: list[bytes]) -> int:
    """Which of the signatures relayed with copies of one answer its worker made (the first if
    none or only one): recovered here, since such copies are rare."""
    if len(signatures) > 1:
        digest = domain.digest(Answer(*relayed).struct_hash())
        for i, signature in enumerate(signatures):
            try:
                if recover(digest, signature) == relayed[3]:
                    return i
            except SignatureError:
                continue
    return 0


def signature_findings(owners: list[SubmittedAnswer], signers: list[str]) -> list[Finding]:
    findings = []
    for answer, signer in zip(owners, signers):
        if signer.startswith("error:"):
            findings.append(_finding(SIGNATURES, "unreadable_signature", f"signature {signer[7:]}", answer))
        elif signer != answer.worker:
            findings.append(_finding(SIGNATURES, "bad_signature", f"signature recovers to {signer}, not the worker "
                                     "(or was made for another chain or escrow)", answer))
    return findings


def _finding(check: str, code: str, message: str, a: SubmittedAnswer, severity: str = "discrepancy") -> Finding:
    return Finding(check, code, message, severity, a.block, a.tx, a.batch, a.task, a.worker)


# -- check 4: content -----------------------------------------------------------------


def manifest_findings(replay: Replay, manifests: dict[int, bytes | str]) -> tuple[dict[int, BatchManifest], list]:
    """Parsed manifests by batch, and findings for those that do not resolve or parse."""
    parsed: dict[int, BatchManifest] = {}
    findings = []
    for batch_id, content in sorted(manifests.items()):
        totals = replay.batches[batch_id].totals
        where = {"block": totals.created_block, "batch": batch_id}
        if isinstance(content, str):
            code = "manifest_" + content.split(":", 1)[0]
            findings.append(Finding(CONTENT, code, f"manifest {totals.manifest_cid}: {content}", **where))
            continue
        try:
            manifest = BatchManifest.from_json(content)
        except (ManifestError, InvalidCID) as exc:
            findings.append(Finding(CONTENT, "manifest_invalid", f"manifest {totals.manifest_cid}: {exc}", **where))
            continue
        if manifest.task_count != totals.task_count:
            findings.append(Finding(CONTENT, "manifest_task_count", f"manifest lists {manifest.task_count} tasks, "
                                    f"the batch pays for {totals.task_count}", **where))
        parsed[batch_id] = manifest
    return parsed, findings


def task_findings(replay: Replay, manifests: dict[int, BatchManifest], verdicts: Verdicts) -> list[Finding]:
    findings = []
    for batch_id, manifest in sorted(manifests.items()):
        block = replay.batches[batch_id].totals.created_block
        for index, text in enumerate(manifest.task_cids):
            verdict = verdicts.get(CID.parse(text))
            if verdict:
                findings.append(Finding(CONTENT, "task_" + verdict.split(":", 1)[0],
                                        f"task payload {text}: {verdict}", block=block, batch=batch_id, task=index))
    return findings


def answer_findings(submitted: list[SubmittedAnswer], verdicts: Verdicts) -> list[Finding]:
    findings = []
    for answer in submitted:
        cid = raw_cid(answer.digest)
        verdict = verdicts.get(cid)
        if verdict:
            findings.append(_finding(CONTENT, "answer_" + verdict.split(":", 1)[0],
                                     f"answer payload {cid}: {verdict}", answer))
    return findings


def reason_cids(reasons: list[ReasonRef]) -> list[CID]:
    cids = []
    for reason in reasons:
        try:
            cids.append(CID.from_bytes(reason.raw))
        except InvalidCID:
            pass
    return cids


def reason_findings(reasons: list[ReasonRef], verdicts: Verdicts, kind: str) -> list[Finding]:
    """Rejections must carry a resolvable reason; a bonus's reason is optional (notices only)."""
    severity = "discrepancy" if kind == "rejection" else NOTICE
    findings = []
    for reason in reasons:
        e = reason.event
        where = {"block": e.block_number, "tx": e.transaction_hash, "batch": reason.batch,
                 "task": reason.task, "worker": reason.worker}
        if not reason.raw:
            findings.append(Finding(CONTENT, f"{kind}_without_reason", f"{kind} with an empty reason CID",
                                    severity, **where))
            continue
        try:
            cid = CID.from_bytes(reason.raw)
        except InvalidCID as exc:
            findings.append(Finding(CONTENT, f"{kind}_reason_invalid", f"{kind} reason 0x{reason.raw.hex()} is "
                                    f"not a CID: {exc}", severity, **where))
            continue
        verdict = verdicts.get(cid)
        if verdict:
            findings.append(Finding(CONTENT, f"{kind}_reason_unresolvable", f"{kind} reason {cid}: {verdict}",
                                    severity, **where))
    return findings


# -- check 5: reputation ---------------------------------------------------------------


def reputation_findings(history: ChainHistory, replay: Replay) -> list[Finding]:
    if history.reputation is None:
        return [Finding(REPUTATION, "reputation_unavailable", "the escrow names no reputation contract: "
                        "counters not checked", NOTICE)]
    recorded: defaultdict[str, Counter] = defaultdict(Counter)
    workers: Counter[tuple[str, int]] = Counter()
    requesters: Counter[tuple[str, int]] = Counter()
    escrow_txs: dict[str, Event] = {}
    findings = []
    for e in history.events:
        if e.address == history.escrow:
            escrow_txs.setdefault(e.transaction_hash, e)
        elif e.name == "OutcomesRecorded":
            requester, outcome = e.args["requester"], e.args["outcome"]
            try:
                entries = recorded_outcomes(e.args)
            except ValueError as exc:
                findings.append(Finding(REPUTATION, "outcome_mismatch", f"{exc}: which outcomes it recorded "
                                        "cannot be told", block=e.block_number, tx=e.transaction_hash))
                continue
            for worker, count in entries:
                recorded[e.transaction_hash][(worker, requester, outcome)] += count
                workers[(worker, outcome)] += count
                requesters[(requester, outcome)] += count
    for tx, first in escrow_txs.items():
        expected, got = replay.outcomes.get(tx, Counter()), recorded.get(tx, Counter())
        for key in sorted(set(expected) | set(got)):
            if expected[key] != got[key]:
                worker, requester, outcome = key
                findings.append(Finding(
                    REPUTATION, "outcome_mismatch", f"reviews imply {expected[key]} x outcome {outcome} for "
                    f"worker/requester {requester}, Reputation recorded {got[key]}", block=first.block_number,
                    tx=tx, worker=worker))
    if history.from_block != 0:
        findings.append(Finding(REPUTATION, "counters_not_compared", "counters are compared only when the "
                                "audit starts at block 0", NOTICE))
        return findings
    for records, sums, role in ((history.state.worker_records, workers, "worker"),
                                (history.state.requester_records, requesters, "requester")):
        for account, record in sorted(records.items()):
            implied = tuple(sums[(account, outcome)] for outcome in range(3))
            if tuple(record) != implied:
                findings.append(Finding(REPUTATION, "counter_mismatch", f"{role} record (approved, rejected, "
                                        f"released) is {tuple(record)}, its events sum to {implied}",
                                        worker=account))
    return findings
