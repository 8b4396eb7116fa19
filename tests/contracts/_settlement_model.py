"""The settlement steps of test_settlement_invariants.py's state machine (PathsModel): settle
(honest over several rounds, of sealed and opened workers, restate-only, and forged: conflicting
answers, a wrong `before`, a restated entry left out), claim, and openSettled, each checked
against the model's state."""

import brownie
from _helpers import PAID, PENDING

from kempelen.protocol.sealed import open_words
from kempelen.protocol.signing import SettledWord


class SettlementSteps:
    """Mixin of PathsModel: its batches, books, workers, relay and stranger, and the model's
    settled, opened, direct, funds, claimed and balances."""

    # ------------------------------------------------------------ settlement path

    def _credit(self, token, account, amount):
        self.balances[(token, str(account))] = self.balances.get((token, str(account)), 0) + amount

    def _words(self, batch_id, worker) -> dict[int, int]:
        """The model's settled words of `worker` in the batch."""
        words: dict[int, int] = {}
        for b, w, t in self.settled:
            if (b, w) == (batch_id, worker):
                words[t // 192] = words.get(t // 192, 0) | 1 << (t % 192)
        return words

    def _sealed(self, batch_id, worker) -> bool:
        return bool(self._words(batch_id, worker)) and (batch_id, worker) not in self.opened

    def _refused(self, pattern, settlement, book, before=None):
        """The escrow refuses `settlement` (with `before`) with a revert string matching `pattern`."""
        with brownie.reverts(revert_pattern=pattern):
            book.send(settlement, self.relay, before=before)

    def act_settle(self, batch_id, keys, honest, ix):
        book = self.books[batch_id]
        mode = "honest" if honest else ["slip", "before", "drop"][ix % 3]
        if mode == "slip":  # slip in an answer already paid by one path or the other, when there is one
            taken = sorted(k for k in self.settled | set(self.direct) if k[0] == batch_id)
            if taken:
                keys = list(dict.fromkeys(keys + [taken[ix % len(taken)]]))
            errors = set()
            for k in keys:
                if k in self.settled:  # against `before` if sealed, the stored words if opened
                    errors.add("AlreadySettled")
                if self.direct.get(k) in (PENDING, PAID):
                    errors.add("AnsweredDirectly")
            if errors:
                settlement, _ = book.build([(w, t) for _, w, t in keys], checked=False)
                # The first conflicting entry (in the escrow's order) names the error.
                self._refused(f"Settlement({'|'.join(sorted(errors))}): .*", settlement, book)
                return "refused"
        keys = [k for k in keys if k not in self.settled and self.direct.get(k) not in (PENDING, PAID)]
        if not keys:
            return self._restate_only(batch_id, ix)
        answers = [(w, t) for _, w, t in keys]
        cost = len(keys) * (self.rewards[batch_id] + self.fees[batch_id])
        opened = {w for _, w, _ in keys if (batch_id, w) in self.opened}  # settled against stored words
        settlement, tree = book.build(answers)
        # The SDK restates the earlier words of the sealed workers it pays, not of opened ones.
        assert {e.worker for e in settlement.settled if e.bits == 0} <= {w for _, w, _ in keys} - opened
        if opened and (ix % 4 == 1 or mode == "drop"):  # restating an opened worker's words anyway: no-ops
            settlement, tree = book.build(answers, checked=False)
        if cost > self.funds[batch_id]:
            self._refused("SettlementInsufficientFunds: .*", settlement, book)
            return "refused"
        before = book.before(settlement)
        assert before == [self._words(batch_id, e.worker).get(e.word_index, 0) for e in settlement.settled]
        zero = [i for i, e in enumerate(settlement.settled) if e.bits == 0]
        if any(settlement.settled[i].worker in opened for i in zero):
            outcome = "ok_opened_restated"
        else:
            outcome = "ok_opened" if opened else "ok_restating" if zero else "ok"
        if mode == "drop" and zero:
            j = zero[ix % len(zero)]
            worker = settlement.settled[j].worker
            dropped, tree = book.build(answers, settled=settlement.settled[:j] + settlement.settled[j + 1:])
            if worker not in opened:
                self._refused(f"SettlementPriorMismatch: {batch_id}, {worker.lower()}", dropped, book,
                              before=before[:j] + before[j + 1:])
                return "dropped_restated"
            # An opened worker's restated words are not required.
            settlement, before, outcome = dropped, before[:j] + before[j + 1:], "ok_opened_dropped_restated"
        elif mode in ("before", "drop"):
            mine = [i for i, e in enumerate(settlement.settled) if e.worker in opened]
            i = mine[ix % len(mine)] if mine and ix // 3 % 2 else ix % len(settlement.settled)
            entry = settlement.settled[i]
            forged = list(before)
            free = ~entry.bits
            forged[i] ^= free & -free  # a bit the entry does not settle: no overlap
            if entry.worker not in opened:
                error = "SettlementEmptyWord" if forged[i] | entry.bits == 0 else "SettlementPriorMismatch"
                self._refused(f"{error}: {batch_id}, {entry.worker.lower()}(, {entry.word_index})?", settlement,
                              book, before=forged)
                return "forged_before"
            before, outcome = forged, "ok_opened_forged_before"  # ignored: the stored words count
        tx = book.send(settlement, self.relay, before=before)
        book.record(settlement, tree, tx, answers)
        assert tx.events["SettlementPosted"]["answers"] == len(keys)
        self.settled.update(keys)
        self.funds[batch_id] -= cost
        self._credit(self.tokens[batch_id], self.relay, len(keys) * self.fees[batch_id])
        return outcome

    def _restate_only(self, batch_id, ix):
        """A settlement with nothing new that restates one settled worker's words: pays nothing.
        For an opened worker (no-ops) `before` is all ones half the time: ignored."""
        book = self.books[batch_id]
        settled = sorted(str(w) for w in self.workers if self._words(batch_id, str(w)))
        if not settled:
            return None
        worker = settled[ix % len(settled)]
        entries = [SettledWord(worker, i, 0) for i in sorted(self._words(batch_id, worker))]
        garbage = (batch_id, worker) in self.opened and ix % 2 == 1
        tx = book.post([], self.relay, settled=entries, before=[2**256 - 1] * len(entries) if garbage else None)
        assert tx.events["SettlementPosted"]["answers"] == 0
        return "restate_only_opened" if (batch_id, worker) in self.opened else "restate_only"

    def act_claim(self, batch_id, keys, honest, ix):
        book = self.books[batch_id]
        if book.tree is None:
            return
        _, worker, _ = keys[0]
        if not any(w.lower() == worker.lower() for w, _ in book.tree.values):
            return
        args = list(book.claim_args(worker))
        earned = args[2]
        if not honest:  # an inflated amount with the real proof: refused
            args[2] += self.rewards[batch_id]
            with brownie.reverts(revert_pattern="Settlement(ClaimExceedsSettled|InvalidProof): .*"):
                self.escrow.claimEarnings(*args, {"from": self.stranger})
            return "inflated"
        already = self.claimed.get((batch_id, worker), 0)
        if earned == already:
            with brownie.reverts(revert_pattern="SettlementNothingToClaim: .*"):
                self.escrow.claimEarnings(*args, {"from": self.stranger})
            return "replay"
        tx = self.escrow.claimEarnings(*args, {"from": self.stranger})
        assert tx.return_value == earned - already
        self.claimed[(batch_id, worker)] = earned
        self._credit(self.tokens[batch_id], worker, earned - already)
        return "ok"

    def act_open(self, batch_id, keys, honest, ix):
        """openSettled of the first picked worker: honest, with a wrong word, twice, or with nothing
        settled; anyone (the stranger) posts it."""
        book = self.books[batch_id]
        worker = keys[0][1]
        words = book.words(worker)
        assert words == open_words(self._words(batch_id, worker))
        mismatch = f"SettlementPriorMismatch: {batch_id}, {worker.lower()}"
        if (batch_id, worker) in self.opened or not words:
            with brownie.reverts(mismatch):
                self.escrow.openSettled(batch_id, worker, words or [1 << ix % 192][: ix % 2], {"from": self.stranger})
            return "twice" if words else "nothing"
        if not honest:
            forged = list(words)
            forged[ix % len(forged)] ^= 1 << ix % 192
            with brownie.reverts(mismatch):
                self.escrow.openSettled(batch_id, worker, forged, {"from": self.stranger})
            return "forged"
        tx = book.open(worker, self.stranger)
        assert dict(tx.events["SettledWordsOpened"]) == {"batchId": batch_id, "worker": worker}
        self.opened.add((batch_id, worker))
        return "ok"

