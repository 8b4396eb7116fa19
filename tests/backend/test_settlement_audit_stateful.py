"""Both payment paths on a real anvil, driven by hypothesis, audited after every run.

Random sequences of: honest settlements (kempelen.protocol.settlement, as the SDK builds them,
restating the earlier words of sealed workers settled before; a worker whose settled words were
opened is settled against its stored words, with no restating entries or with them, and with its
`before` honest or garbage, which the escrow ignores for it), settlements that name an answer
already on the direct path (the escrow must refuse them), openings of a worker's settled words,
claims, direct submissions (the escrow must skip every answer of a worker whose settled words
are sealed, and the settled ones of a worker whose words were opened), approvals and
rejections, time passing with releases, and withdrawals. After every step:

- the money invariant of ISettlement from the escrow's own views: its ETH balance ==
  funds + pending x reward + (settled - claimed) + the accounts' balances;
- no worker has claimed more than reward x the answers it signed that the requester settled;
- one answer, one path: no settled answer is pending or paid on the direct path, and no answer
  the direct path accepted is settled (by the AnswersSettled events: the escrow keeps only a
  digest of a worker's settled words until they are opened).

At the end of every run the auditor must find the history clean. The default run is small
(a few examples, well under a minute); `--slow` runs many more.
"""

from __future__ import annotations

import pytest
from _audit_history import History, address
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from web3 import Web3

from kempelen.audit import run_audit
from kempelen.audit.content import DirectoryStore
from kempelen.chain import artifacts
from kempelen.chain.anvil import Anvil
from kempelen.chain.contracts import ETH, deploy_protocol
from kempelen.ipfs.store import ContentStore
from kempelen.protocol.events import submitted_answers
from kempelen.protocol.sealed import SettledBook
from kempelen.protocol.signing import SettledWord

TASKS = [0, 1, 2, 95, 96, 191, 192, 199]  # across review groups (96) and settled words (192)
GARBAGE = 0xBAD  # a `before` word for an opened worker's entry: the escrow ignores it
REWARD, FEE, WINDOW = 10**15, 10**13, 600
PENDING, PAID = 1, 2  # ITaskEscrow.AnswerStatus


@pytest.fixture
def paths(tmp_path, keys):
    """An escrow of the test's own on its own anvil (runs are rolled back with evm_revert)."""
    with Anvil(log_path=tmp_path / "anvil.log") as node:
        deployment = deploy_protocol(node.url, keys[0])
        w3 = Web3(Web3.HTTPProvider(node.url))
        escrow = w3.eth.contract(address=deployment.escrow, abi=artifacts.load("TaskEscrow").abi)
        yield History(w3, escrow, ContentStore(tmp_path / "store"), deployment.chain_id), keys


def machine(h: History, keys: list[str]):
    requester, relayer, workers = keys[1], keys[2], keys[3:6]
    rpc = h.w3.provider.make_request
    snapshot = [rpc("evm_snapshot", [])["result"]]

    class Paths(RuleBasedStateMachine):
        @initialize()
        def start(self):
            assert rpc("evm_revert", [snapshot[0]])["result"]
            snapshot[0] = rpc("evm_snapshot", [])["result"]
            h.settled.clear()
            h.books.clear()
            self.batch = h.create_batch(requester, tasks=200, answers_per_task=3, reward=REWARD, relay_fee=FEE,
                                        lifetime=100_000, review_window=WINDOW)
            self.direct: dict[tuple[str, int], bool] = {}  # (worker key, task) -> rejected
            self.fresh: set[tuple[str, int]] = set()  # submitted since time last passed: reviewable
            self.settled: set[tuple[str, int]] = set()  # signed by the worker, settled by the requester
            self.opened: set[str] = set()  # worker keys whose settled words were opened

        def pairs(self, picks):
            return list(dict.fromkeys((workers[w], t) for w, t in picks))

        def unsettled(self, picks):
            """Picked answers neither settled nor pending or paid directly (a rejected one may be)."""
            return [p for p in self.pairs(picks) if p not in self.settled and not
                    (p in self.direct and not self.direct[p])]

        @rule(picks=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(TASKS)), min_size=1, max_size=5),
              garbage=st.booleans())
        def settle(self, picks, garbage):
            """Sealed and opened workers alike; an opened one's entries are only its new words, and
            with `garbage` its `before` words are not its bits."""
            wanted = self.unsettled(picks)
            if not wanted:
                return
            opened = {address(w) for w in self.opened} if garbage else set()
            h.settle(requester, relayer, self.batch, [
                h.signed_answer(self.batch, t, w, f"settled {self.batch}/{t} by {w[-4:]}".encode())
                for w, t in wanted], before=lambda entry, bits: GARBAGE if entry.worker in opened else bits)
            self.settled.update(wanted)

        @rule(picks=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(TASKS)), min_size=1, max_size=3))
        def settle_conflicting(self, picks):
            """A settlement naming an answer pending or paid on the direct path is refused."""
            taken = [p for p in self.pairs(picks) if p in self.direct and not self.direct[p]
                     and p not in self.settled]  # opened or not: the escrow checks the direct path
            if not taken:
                return
            with pytest.raises(AssertionError, match="reverted"):  # History.settle records only successes
                h.settle(requester, relayer, self.batch, [h.signed_answer(self.batch, t, w, b"both paths")
                                                          for w, t in taken])

        @rule(worker=st.integers(0, 2), task=st.sampled_from(TASKS))
        def settle_opened_as_sealed(self, worker, task):
            """A worker whose settled words were opened, settled as if they were still sealed (every
            earlier word restated, with no bits): the escrow takes it against the stored words."""
            key = workers[worker]
            if key not in self.opened or not self.unsettled([(worker, task)]):
                return
            book = h.books[self.batch]
            book.opened.discard(address(key))
            try:
                h.settle(requester, relayer, self.batch, [h.signed_answer(self.batch, task, key, b"opened")])
            finally:
                book.opened.add(address(key))
            self.settled.add((key, task))

        @rule(worker=st.integers(0, 2))
        def open_words(self, worker):
            """Anyone opens a settled worker's words: its unsettled answers may take the direct path."""
            key = workers[worker]
            if key in self.opened or not any(w == key for w, _ in self.settled):
                return
            h.open_settled(relayer, self.batch, key)
            self.opened.add(key)

        @rule(worker=st.integers(0, 2), tasks=st.lists(st.sampled_from(TASKS), min_size=2, max_size=4, unique=True),
              garbage=st.booleans())
        def open_then_settle(self, worker, tasks, garbage):
            """The worker settled (tasks[0], unless it cannot be), opened, then settled again (the
            other tasks): entries of its new words only, `before` garbage or not."""
            self.settle([(worker, tasks[0])], False)
            self.open_words(worker)
            if workers[worker] in self.opened:
                self.settle([(worker, t) for t in tasks[1:]], garbage)

        @rule(picks=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(TASKS)), min_size=1, max_size=4))
        def submit(self, picks):
            """Direct answers; those of workers whose settled words are sealed, and those already
            settled, are sent too and must be skipped."""
            pairs = [p for p in self.pairs(picks) if p not in self.direct]
            if not pairs:
                return
            receipt = h.submit(relayer, [h.sign_answer(self.batch, t, w, f"direct {t} by {w[-4:]}".encode())
                                         for w, t in pairs])
            accepted = {(e.args.worker, task) for e in h.escrow.events.AnswersSubmitted().process_receipt(receipt)
                        for task, _ in submitted_answers(e.args)}
            for w, t in pairs:
                if (w, t) in self.settled:
                    assert (address(w), t) not in accepted, "a settled answer was accepted directly"
                elif w not in self.opened and any(s == w for s, _ in self.settled):
                    assert (address(w), t) not in accepted, "an answer of a sealed worker was accepted"
                else:
                    assert (address(w), t) in accepted
                    self.direct[(w, t)] = False
                    self.fresh.add((w, t))

        @rule(approve=st.booleans(), count=st.integers(1, 3))
        def review(self, approve, count):
            chosen = sorted(self.fresh)[:count]
            if not chosen:
                return
            if approve:
                h.approve(requester, self.batch, chosen)
            else:
                h.reject(requester, self.batch, chosen)
                self.direct.update(dict.fromkeys(chosen, True))
            self.fresh.difference_update(chosen)

        @rule()
        def sleep_and_release(self):
            h.advance(WINDOW + 1)
            self.fresh.clear()
            pending = [(w, t) for (w, t), rejected in self.direct.items() if not rejected
                       and self.status(w, t) == PENDING]
            if pending:
                h.release(relayer, self.batch, pending)

        @rule(worker=st.integers(0, 2))
        def claim(self, worker):
            key = workers[worker]
            latest = h.settled.get(self.batch)
            if latest is None or address(key) not in latest[0].earnings:
                return
            _, claimed = h.escrow.functions.earningsOf(self.batch, address(key)).call()
            if latest[0].earnings[address(key)] > claimed:
                h.claim(relayer if worker == 0 else key, self.batch, key)

        @rule(worker=st.integers(0, 2))
        def withdraw(self, worker):
            if h.escrow.functions.balanceOf(ETH, address(workers[worker])).call():
                h.send(workers[worker], h.escrow.functions.withdraw(ETH))

        def status(self, worker_key: str, task: int) -> int:
            return h.escrow.functions.answerStatus(self.batch, address(worker_key), task).call()[0]

        @invariant()
        def money_is_all_accounted_for(self):
            e = h.escrow.functions
            record = e.batch(self.batch).call()
            pool = e.settlementOf(self.batch).call()[2] - sum(
                e.earningsOf(self.batch, address(w)).call()[1] for w in workers)
            accounts = sum(e.balanceOf(ETH, address(k)).call() for k in (*workers, relayer))
            owed = record[9] + record[10] * REWARD + pool + accounts  # the run's only batch
            assert h.w3.eth.get_balance(h.escrow.address) == owed

        @invariant()
        def claims_within_signed_answers(self):
            for key in workers:
                signed = sum(1 for w, _ in self.settled if w == key)
                settled, claimed = h.escrow.functions.earningsOf(self.batch, address(key)).call()
                assert settled == signed * REWARD and claimed <= settled

        @invariant()
        def one_answer_one_path(self):
            for w, t in self.settled:
                assert self.status(w, t) not in (PENDING, PAID)
            logged = SettledBook.of(SettledWord(w["worker"], w["wordIndex"], w["bits"])
                                    for e in h.escrow.events.AnswersSettled().get_logs(from_block=0)
                                    if e.args.batchId == self.batch for w in e.args.settled)
            assert {(a, t) for a, words in logged.words.items() for t in range(200)
                    if logged.is_settled(a, t)} == {(address(w), t) for w, t in self.settled}
            for (w, t), rejected in self.direct.items():
                if not rejected:
                    assert not logged.is_settled(address(w), t)

        def teardown(self):
            if not hasattr(self, "batch"):
                return
            report = run_audit(h.w3.provider.endpoint_uri, h.escrow.address, DirectoryStore(h.store.root))
            assert report.clean and report.findings == [], [f.to_json() for f in report.findings]
            posted = h.settled[self.batch][0].sequence if self.batch in h.settled else 0
            assert [s.sequence for s in report.settlements] == list(range(1, posted + 1))
            assert all(s.manifest_verified for s in report.settlements)

    return Paths


def run(paths, examples: int, steps: int) -> None:
    h, keys = paths
    run_state_machine_as_test(machine(h, keys), settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, derandomize=examples <= 10, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]))


def test_both_paths_keep_the_invariants_and_audit_clean(paths):
    run(paths, examples=10, steps=15)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_both_paths_keep_the_invariants_and_audit_clean_long(paths):
    run(paths, examples=50, steps=25)
