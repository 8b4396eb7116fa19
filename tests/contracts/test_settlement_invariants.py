"""Stateful fuzzing of both payment paths together against a Python model.

Hypothesis drives random sequences of: settlements of answers the relay holds over several rounds
(honest ones restating the paid sealed workers' earlier words with the right `before`, and paying
opened workers against their stored words, with or without restating them, whatever their
`before`; restate-only ones; and forged ones: naming answers already on the direct path or already
settled, with a wrong `before` for a sealed worker, or with a sealed worker's restated entry left
out), openSettled (honest, with wrong words, twice, for a worker with nothing settled), claims
(current, stale, inflated), direct submissions (sealed workers skipped, opened workers' settled
answers refused, including those settled after the opening, their others accepted), approve /
reject / release, withdrawals and time passing, over an ETH and a stablecoin batch. After every
step:

- the money invariant of ISettlement per token, from the chain alone: token balance of the
  escrow == Σ batches (funds + pending × reward) + Σ (settled − claimed) + Σ balances,
  and the same numbers from the model;
- no worker has claimed more than its settled answers earned, and no worker has settled answers
  it did not sign (every settled answer is one the relay holds a signature for);
- no answer is paid by both paths: never settled while pending or paid on the direct path;
- the settled words anyone rebuilds from the AnswersSettled events are the model's, and the
  escrow's digest of every sealed worker is theirs (openSettled of them succeeds, as an eth_call);
  a worker with nothing settled, or opened, cannot be opened; an opened worker's record keeps the
  OPENED digest and its stored words are the model's (settlements after the opening included).

The settlement steps (settle, claim, open) live in _settlement_model.py.
KEMPELEN_SETTLE_FUZZ_EXAMPLES / KEMPELEN_SETTLE_FUZZ_STEPS enlarge the run (defaults: ~1 minute).
"""

import importlib.util
import os
from pathlib import Path

import brownie
import brownie.test
from _helpers import (  # noqa: F401  (fixtures)
    ALREADY_ANSWERED,
    ETH,
    NONE,
    PAID,
    PENDING,
    REASON_CID,
    REJECTED,
    REVERTED,
    SETTLEMENT_SEALED,
    _isolate,
    batch_call,
    deployment,
    fund_gas,
    mine_at,
    now,
    reviewed,
    sets,
    signed_answer,
    submitted,
)
from _settlement import (
    OPENED,
    SettlementBook,
    record_of,
    requester_with_key,
    settled_batch,
    stored_word_of,
)
from _settlement_model import SettlementSteps
from brownie import accounts, web3
from hypothesis import HealthCheck
from hypothesis import strategies as st

from kempelen.protocol.sealed import open_words

EXAMPLES = int(os.environ.get("KEMPELEN_SETTLE_FUZZ_EXAMPLES", "25"))
STEPS = int(os.environ.get("KEMPELEN_SETTLE_FUZZ_STEPS", "40"))
TASKS = [0, 1, 2, 31, 32, 95, 96, 191, 192, 250]  # across settled words, answer words, count words
WINDOW = 600
GROUP = 96
STATS = {}  # "action:outcome" -> times seen, printed with KEMPELEN_FUZZ_STATS=1


def _load_state_machine():
    """brownie's state_machine from its pure-Python source (see test_invariants.py for why)."""
    path = Path(brownie.test.__file__).with_name("stateful.py")
    spec = importlib.util.spec_from_file_location("_brownie_stateful_source_settlement", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.state_machine


state_machine = _load_state_machine()


class PathsModel(SettlementSteps):
    st_action = st.sampled_from(["settle"] * 5 + ["claim"] * 3 + ["submit"] * 3 + ["open"] * 2
                                + ["review", "release", "withdraw", "sleep"])
    st_batch = st.integers(0, 1)
    st_picks = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(TASKS)), min_size=1, max_size=6)
    st_honest = st.sampled_from([True, True, True, False])
    st_ix = st.integers(0, 255)

    def __init__(cls, d):
        cls.d, cls.escrow = d, d.escrow
        cls.requester = requester_with_key(7)
        cls.workers = d.workers
        cls.relay, cls.stranger = d.relay, d.stranger
        for w in cls.workers:
            fund_gas(w, 10**19)
        eth = settled_batch(d.escrow, cls.requester, task_count=251, answers_per_task=3, reward=10**6,
                            relay_fee=10**4, review_window=WINDOW, deadline=now() + 10**7)
        usdc = settled_batch(d.escrow, cls.requester, token=d.usdc, task_count=251, answers_per_task=2,
                             reward=5_000, relay_fee=0, review_window=WINDOW, deadline=now() + 10**7)
        cls.batch_ids = [eth, usdc]
        cls.tokens = {eth: ETH, usdc: d.usdc.address}
        cls.rewards = {eth: 10**6, usdc: 5_000}
        cls.fees = {eth: 10**4, usdc: 0}
        cls.initial_funds = {b: d.escrow.batch(b).dict()["funds"] for b in cls.batch_ids}

    def setup(self):
        self.books = {b: SettlementBook(self.escrow, b, self.requester, self.rewards[b]) for b in self.batch_ids}
        self.funds = dict(self.initial_funds)
        self.pending = dict.fromkeys(self.batch_ids, 0)
        self.direct = {}  # (batch, worker, task) -> status on the direct path
        self.submitted_at = {}  # (batch, worker, task // 96) -> latest submission time
        self.counts = {}  # (batch, task) -> pending + paid direct answers
        self.settled = set()  # (batch, worker, task)
        self.opened = set()  # (batch, worker) whose settled words were opened
        self.claimed = {}  # (batch, worker) -> amount
        self.balances = {}  # (token, account) -> owed
        self.signed = set()  # answers the relay holds a worker signature for

    def rule_step(self, st_action, st_batch, st_picks, st_honest, st_ix):
        batch_id = self.batch_ids[st_batch]
        keys = [(batch_id, str(self.workers[w]), t) for w, t in dict.fromkeys(st_picks)]
        self.signed.update(keys)  # workers signed these answers and sent them to the relay
        outcome = getattr(self, f"act_{st_action}")(batch_id, keys, st_honest, st_ix)
        STATS[f"{st_action}:{outcome}"] = STATS.get(f"{st_action}:{outcome}", 0) + 1

    def teardown_final(cls):
        if os.environ.get("KEMPELEN_FUZZ_STATS"):
            print("\nsteps by outcome:", dict(sorted(STATS.items())))

    # ------------------------------------------------------------ direct path

    def act_submit(self, batch_id, keys, honest, ix):
        per_task = 3 if batch_id == self.batch_ids[0] else 2
        signed = [signed_answer(self.escrow, self._worker(w), batch_id, t) for _, w, t in keys]
        tx = self.escrow.submitAnswers([a for a, _ in signed], [s for _, s in signed], {"from": self.relay})
        accepted = {(w, t): digest for w, t, digest in submitted(tx)}
        newly = []  # (worker, task) of the answers the model accepts, in submission order
        skipped = {(e["worker"], e["taskIndex"]): e["reason"] for e in tx.events["AnswerSkipped"]} \
            if "AnswerSkipped" in tx.events else {}
        cost = self.rewards[batch_id] + self.fees[batch_id]
        outcome = "ok"
        released = []
        for key in keys:
            _, w, t = key
            released += self._release_overdue(batch_id, w, t, tx.timestamp)
            if key in self.direct:  # its direct record comes first
                assert skipped.get((w, t)) == ALREADY_ANSWERED, key
                outcome = "duplicate"
            elif self._sealed(batch_id, w):
                assert skipped.get((w, t)) == SETTLEMENT_SEALED, key
                outcome = "sealed"
            elif key in self.settled:  # opened: its settled tasks are known
                assert skipped.get((w, t)) == ALREADY_ANSWERED, key
                outcome = "settled_refused"
            elif self.counts.get((batch_id, t), 0) >= per_task or self.funds[batch_id] < cost:
                assert (w, t) in skipped, key
            else:
                assert accepted.get((w, t)) == bytes(signed[keys.index(key)][0][2]), key
                if (batch_id, w) in self.opened:
                    outcome = "opened_accepted"
                newly.append((w, t))
                self.direct[key] = PENDING
                self.counts[(batch_id, t)] = self.counts.get((batch_id, t), 0) + 1
                self.submitted_at[(batch_id, w, t // GROUP)] = tx.timestamp
                self.funds[batch_id] -= cost
                self.pending[batch_id] += 1
                self._credit(self.tokens[batch_id], self.relay, self.fees[batch_id])
        # Nothing else accepted, each answer named once, in submission order.
        assert [(w, t) for w, t, _ in submitted(tx)] == newly
        got = reviewed(tx, "AnswersReleased")
        assert got == released, (got, released)
        return outcome

    def _release_overdue(self, batch_id, w, t, timestamp):
        """The model of TaskEscrow._releaseOverdue: overdue pending answers of the group, paid."""
        group = (batch_id, w, t // GROUP)
        if group not in self.submitted_at or timestamp <= self.submitted_at[group] + WINDOW:
            return []
        keys = sorted(k for k, s in self.direct.items()
                      if s == PENDING and k[0] == batch_id and k[1] == w and k[2] // GROUP == t // GROUP)
        for key in keys:
            self.direct[key] = PAID
            self._credit(self.tokens[batch_id], w, self.rewards[batch_id])
            self.pending[batch_id] -= 1
        return keys

    def _worker(self, address):
        return next(w for w in self.workers if str(w) == address)

    def _review_deadline(self, key):
        batch_id, w, t = key
        return self.submitted_at[(batch_id, w, t // GROUP)] + WINDOW

    def act_review(self, batch_id, keys, honest, ix):
        """The requester approves (even ix) or rejects one pending answer well inside its window."""
        pending = sorted(k for k, s in self.direct.items() if s == PENDING and k[0] == batch_id
                         and self._review_deadline(k) > now() + 5)
        if not pending:
            return
        key = pending[ix % len(pending)]
        _, w, t = key
        if ix % 2 == 0:
            tx = self.escrow.approve(batch_id, sets([(w, t)]), {"from": self.requester})
            self.direct[key] = PAID
            self._credit(self.tokens[batch_id], w, self.rewards[batch_id])
        else:
            tx = self.escrow.reject(batch_id, sets([(w, t)]), REASON_CID, {"from": self.requester})
            self.direct[key] = REJECTED
            self.counts[(batch_id, t)] -= 1
            self.funds[batch_id] += self.rewards[batch_id]
        name = "AnswersApproved" if ix % 2 == 0 else "AnswersRejected"
        assert reviewed(tx, name) == [key]
        self.pending[batch_id] -= 1
        return "approved" if ix % 2 == 0 else "rejected"

    def act_release(self, batch_id, keys, honest, ix):
        pending = sorted(k for k, s in self.direct.items() if s == PENDING and k[0] == batch_id)
        if not pending:
            return
        mine_at(max([now()] + [self._review_deadline(k) + 1 for k in pending]))
        task_sets = sets([(w, t) for _, w, t in pending])
        tx = self.escrow.release(batch_id, task_sets, {"from": self.stranger})
        # One event per set, naming its answers; together every pending answer, each once.
        assert [(e["worker"], e["firstTask"], e["tasks"]) for e in tx.events["AnswersReleased"]] == task_sets
        assert sorted(reviewed(tx, "AnswersReleased")) == pending
        for key in pending:
            self.direct[key] = PAID
            self._credit(self.tokens[batch_id], key[1], self.rewards[batch_id])
        self.pending[batch_id] -= len(pending)
        return "ok"

    def act_withdraw(self, batch_id, keys, honest, ix):
        token = self.tokens[batch_id]
        account = self.relay if ix % 3 == 0 else self._worker(keys[0][1])
        owed = self.balances.get((token, str(account)), 0)
        if owed == 0:
            with brownie.reverts():
                self.escrow.withdraw(token, {"from": account})
            return
        tx = self.escrow.withdraw(token, {"from": account})
        assert tx.events["Withdrawn"]["amount"] == owed
        self.balances[(token, str(account))] = 0
        return "ok"

    def act_sleep(self, batch_id, keys, honest, ix):
        mine_at(now() + [1, 60, WINDOW // 2, WINDOW + 5][ix % 4])

    # ------------------------------------------------------------ invariants

    def invariant_money_and_one_path(self):
        escrow = self.escrow
        people = [str(w) for w in self.workers] + [str(self.relay)]
        tokens = sorted(set(self.tokens.values()))
        keys = sorted(self.settled | set(self.direct))
        calls = [(escrow.batch, (b,)) for b in self.batch_ids]
        calls += [(escrow.earningsOf, (b, w)) for b in self.batch_ids for w in people]
        calls += [(escrow.balanceOf, (t, a)) for t in tokens for a in people]
        calls += [(self.d.usdc.balanceOf, (escrow.address,))]
        calls += [(escrow.answerStatus, k) for k in keys]
        results = iter(batch_call(calls))

        locked = dict.fromkeys(tokens, 0)
        for b in self.batch_ids:
            batch = next(results)
            funds, pending, reward, token = batch[9], batch[10], batch[7], batch[4]
            assert (funds, pending) == (self.funds[b], self.pending[b]), b
            locked[token] += funds + pending * reward
        pools = dict.fromkeys(tokens, 0)
        for b in self.batch_ids:
            for w in people:
                settled, claimed = next(results)
                mine = sum(1 for k in self.settled if k[0] == b and k[1] == w)
                signed = sum(1 for k in self.signed if k[0] == b and k[1] == w)
                # No worker claims more than its settled answers earned, nor settles what it did not sign.
                assert claimed == self.claimed.get((b, w), 0) <= settled == mine * self.rewards[b], (b, w)
                assert mine <= signed, (b, w)
                pools[self.tokens[b]] += settled - claimed
        held = dict.fromkeys(tokens, 0)
        for t in tokens:
            for a in people:
                balance = next(results)
                assert balance == self.balances.get((t, a), 0), (t, a)
                held[t] += balance
        actual = {ETH: web3.eth.get_balance(escrow.address), self.d.usdc.address: next(results)}
        for t in tokens:
            assert actual[t] == locked[t] + pools[t] + held[t], (t, actual, locked, pools, held)
        statuses = [next(results)[0] for _ in keys]
        for key, state in zip(keys, statuses):
            assert state == self.direct.get(key, NONE), key
            assert not (key in self.settled and state in (PENDING, PAID)), f"answer {key} on both paths"
        self._check_sealed_words()

    def _check_sealed_words(self):
        """The words rebuilt from the events are the model's; the escrow's digest of each sealed
        worker is theirs (openSettled, as an eth_call, accepts them); opened workers and workers
        with nothing settled cannot be opened; opened workers' stored words are the model's."""
        pairs = [(b, str(w)) for b in self.batch_ids for w in self.workers]
        calls = []
        for b, w in pairs:
            words = self._words(b, w)
            book = self.books[b]
            assert book.sealed.of_worker(w) == words, (b, w)
            assert book.sealed.is_sealed(w) == self._sealed(b, w), (b, w)
            calls.append((self.escrow.openSettled, (b, w, open_words(words) or [1])))
        for (b, w), result in zip(pairs, batch_call(calls, allow_revert=True)):
            assert (result is not REVERTED) == self._sealed(b, w), (b, w, result)
        for b, w in sorted(self.opened):
            assert record_of(self.escrow, b, w)[0] == OPENED, (b, w)
            words = self._words(b, w)
            for i in range(max(TASKS) // 192 + 1):
                assert stored_word_of(self.escrow, b, w, i) == words.get(i, 0), (b, w, i)


def test_both_paths_keep_the_money_invariant(deployment):
    for w in deployment.workers:
        accounts.at(str(w))
    state_machine(
        PathsModel,
        deployment,
        settings={
            "max_examples": EXAMPLES,
            "stateful_step_count": STEPS,
            "deadline": None,
            "suppress_health_check": HealthCheck.all(),
            "database": None,
        },
    )
