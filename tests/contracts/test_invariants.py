"""Stateful fuzzing of the escrow against a Python model: random batch lives, money invariant.

Hypothesis drives random sequences of create (ETH, stablecoin) / submit (valid and forged
answers, several workers and relays) / approve / reject / release / withdraw / withdrawFor /
reclaim / bonus / extend / block / forced ETH / time passing. Reviews name answers by task sets
in several encodings (one set per worker and group as the SDK builds them, one set per answer in
pick order, runs of picks; dishonest calls also repeat answers and send malformed sets), and the
model predicts each review call exactly: its error (the first set that is malformed, names an
answer not pending, or is outside its review window), or its events, set by set, and one
reputation entry per run of a worker's consecutive sets. After every step:

- the money invariant of ITaskEscrow, per token, from the chain alone: token balance of the
  escrow == Σ batches (funds + pending × reward) + Σ balanceOf(token, account) (+ what was forced in),
  plus a surplus that is zero unless ETH was forced in; and the same numbers from the model;
- answer statuses, review deadlines and per-task answer counts equal the model's;
- Reputation counters equal what the escrow's review events imply;
- no answer is paid twice (every answer AnswersApproved/AnswersReleased names is new).

Block timestamps are made deterministic (one second per block, anvil_setBlockTimestampInterval)
so the model knows the time of the next transaction; time passes by mining empty blocks.

KEMPELEN_FUZZ_EXAMPLES / KEMPELEN_FUZZ_STEPS enlarge the run (defaults keep it near 2 minutes).
"""

import copy
import importlib.util
import os
from pathlib import Path

import brownie
import brownie.test
from _helpers import (  # noqa: F401  (fixtures)
    ALREADY_ANSWERED,
    BAD_SIGNATURE,
    ETH,
    INSUFFICIENT_FUNDS,
    NONE,
    PAID,
    PAST_DEADLINE,
    PENDING,
    REASON_CID,
    REJECTED,
    REPUTATION_TOO_LOW,
    TASK_FULL,
    TASK_OUT_OF_RANGE,
    UNKNOWN_BATCH,
    WORKER_BLOCKED,
    _isolate,
    batch_call,
    deployment,
    fund_gas,
    mine_at,
    now,
    reviewed,
    set_tasks,
    sets,
    signed_answer,
    submitted,
    token_balance,
    withdrawal_signature,
    worker,
)
from brownie import ForceSend, accounts, chain, web3
from hypothesis import HealthCheck
from hypothesis import strategies as st

from kempelen.protocol.signing import to_compact

EXAMPLES = int(os.environ.get("KEMPELEN_FUZZ_EXAMPLES", "40"))
STEPS = int(os.environ.get("KEMPELEN_FUZZ_STEPS", "30"))

TASK_INDEXES = [0, 1, 2, 31, 32, 95, 96, 97, 191, 192, 250]  # across status and count words
ANSWER_KINDS = ["valid", "valid", "valid", "compact", "forged", "high_s", "wrong_domain"]
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SKIP_NAMES = [
    "UnknownBatch",
    "PastDeadline",
    "TaskOutOfRange",
    "BadSignature",
    "WorkerBlocked",
    "ReputationTooLow",
    "AlreadyAnswered",
    "TaskFull",
    "InsufficientFunds",
]
MODEL_FIELDS = (
    "batches",
    "answers",
    "submitted_at",
    "counts",
    "balances",
    "nonces",
    "blocked",
    "surplus",
    "paid",
    "worker_rep",
    "requester_rep",
    "seen",
)
STATS = {}  # "rule:outcome" -> times seen, printed with KEMPELEN_FUZZ_STATS=1
GROUP = 96  # tasks sharing one answer word, hence one review clock per worker (ITaskEscrow)


def _load_state_machine():
    """brownie's `state_machine`, from the pure-Python source shipped beside the compiled module.

    brownie 1.22.2 ships brownie.test.stateful compiled by mypyc, and the compiled
    _BrownieStateMachine rejects the very subclass state_machine() builds ("TypeError:
    brownie.test.stateful._BrownieStateMachine object expected"). The .py source is the same code.
    """
    path = Path(brownie.test.__file__).with_name("stateful.py")
    spec = importlib.util.spec_from_file_location("_brownie_stateful_source", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.state_machine


state_machine = _load_state_machine()


def _high_s(signature):
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


class EscrowModel:
    """The rules, run by brownie's state_machine; `self.*` is the Python model of the escrow."""

    st_ix = st.integers(0, 255)
    st_token = st.sampled_from(["eth", "usdc"])
    st_task_count = st.sampled_from([1, 2, 3, 97, 200])
    st_per_task = st.integers(1, 3)
    st_reward = st.integers(1, 10**6)
    st_fee = st.sampled_from([0, 0, 1, 777, 10**4])
    st_offset = st.integers(30, 3000)
    st_window = st.integers(10, 1000)
    st_min_rep = st.sampled_from([0, 0, 0, 1, 3])
    st_answers = st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 255), st.sampled_from(ANSWER_KINDS)),
        min_size=1,
        max_size=5,
    )
    st_picks = st.lists(st.integers(0, 10**6), min_size=1, max_size=4)
    st_honest = st.sampled_from([True, True, True, True, False])
    # How a review names its picks: 0 task_sets (the SDK's), 1 one set per pick, 2 runs of picks
    # (a set per consecutive picks of one worker and group); 3 (dishonest only) a malformed set.
    st_encoding = st.integers(0, 3)
    st_sleep = st.sampled_from([1, 5, 60, 400, 1200, 4000])
    st_amount = st.integers(1, 10**6)
    st_terms = st.tuples(
        st_token, st_task_count, st_per_task, st_reward, st_fee, st_offset, st_window, st_min_rep
    )
    # One rule picks a weighted action: hypothesis (6.27) favours the first of several rules and
    # repeats whatever rule it mutates, which starved withdraw/release of steps.
    st_action = st.sampled_from(
        ["submit"] * 4
        + ["withdraw"] * 3
        + ["approve", "reject", "release", "sleep"] * 2
        + ["create", "bonus", "extend", "reclaim", "block", "force_eth"]
    )

    def rule_step(
        self,
        st_action,
        st_ix,
        st_honest,
        st_answers,
        st_picks,
        st_amount,
        st_token,
        st_sleep,
        st_terms,
        st_encoding,
    ):
        self._count(st_action)
        if st_action == "create":
            token, *terms = st_terms
            self.act_create(token, st_ix, *terms)
        elif st_action == "submit":
            self.act_submit(st_ix, st_answers)
        elif st_action in ("approve", "reject", "release"):
            getattr(self, f"act_{st_action}")(st_ix, st_picks, st_honest, st_encoding)
        elif st_action == "withdraw":
            self.act_withdraw(st_ix, st_token, st_honest)
        elif st_action == "sleep":
            self.act_sleep(st_sleep)
        elif st_action == "bonus":
            self.act_bonus(st_ix, st_amount, st_honest)
        elif st_action == "extend":
            self.act_extend(
                st_ix, [0, 0, 100, 5000, -1][st_amount % 5], st_ix % 3, st_amount, st_honest
            )
        elif st_action == "reclaim":
            self.act_reclaim(st_ix, st_honest)
        elif st_action == "block":
            self.act_block(st_ix)
        else:
            self.act_force_eth(st_ix)

    def __init__(cls, d):
        """Runs once, before brownie's snapshot: every example starts from the state built here,
        so even the short examples hypothesis tries first have batches and answers to work on."""
        cls.d = d
        cls.escrow = d.escrow
        cls.reputation = d.reputation
        cls.usdc = d.usdc
        cls.requesters = [accounts[1], accounts[2]]
        cls.relays = [accounts[3], accounts[5]]
        cls.stranger = accounts[4]
        cls.workers = [worker(i) for i in range(4)]
        cls.thief = worker(9)
        for w in cls.workers:
            fund_gas(w, 10**20)
        for r in cls.requesters:
            cls.usdc.approve(cls.escrow, 2**255, {"from": r})
        cls.tokens = {"eth": ETH, "usdc": cls.usdc.address}

        boot = object.__new__(EscrowModel)
        boot.__dict__.update(
            {
                k: getattr(cls, k)
                for k in (
                    "d",
                    "escrow",
                    "reputation",
                    "usdc",
                    "requesters",
                    "relays",
                    "stranger",
                    "workers",
                    "thief",
                    "tokens",
                )
            }
        )
        boot._reset_model()
        web3.provider.make_request("anvil_setBlockTimestampInterval", [1])
        # (token, requester, taskCount, answersPerTask, reward, relayFee, deadline offset, window, minRep)
        boot.act_create("eth", 0, 97, 2, 1000, 10, 2000, 300, 0)
        boot.act_create("usdc", 1, 3, 1, 5 * 10**5, 777, 900, 120, 0)
        boot.act_create("eth", 1, 2, 3, 10**6, 0, 3000, 600, 1)
        boot.act_submit(0, [(0, 0, "valid"), (1, 0, "valid"), (2, 96, "compact"), (0, 98, "valid")])
        boot.act_submit(1, [(0, 1, "valid"), (3, 2, "valid")])
        cls.initial_model = copy.deepcopy(
            {k: v for k, v in boot.__dict__.items() if k in MODEL_FIELDS}
        )
        STATS.clear()

    def setup(self):
        web3.provider.make_request("anvil_setBlockTimestampInterval", [1])
        self.__dict__.update(copy.deepcopy(self.initial_model))

    def _reset_model(self):
        self.batches = {}  # id -> dict of the Batch fields the model tracks
        self.answers = {}  # (batch, worker, task) -> status
        self.submitted_at = {}  # (batch, worker, task // GROUP) -> latest submission time
        self.counts = {}  # (batch, task) -> answers counted against answersPerTask
        self.balances = {}  # (token, account) -> owed
        self.nonces = {}
        self.blocked = set()  # (requester, worker)
        self.surplus = {ETH: 0, self.usdc.address: 0}
        self.paid = set()  # (batch, worker, task) of every answer approved or released
        self.worker_rep = {}  # worker -> [approved, rejected, released]
        self.requester_rep = {}
        self.seen = {
            str(a)
            for a in self.requesters + self.relays + self.workers + [self.stranger, self.thief]
        }

    def teardown_final(cls):
        web3.provider.make_request("anvil_removeBlockTimestampInterval", [])
        if os.environ.get("KEMPELEN_FUZZ_STATS"):
            print("\nsteps by outcome:", dict(sorted(STATS.items())))

    def _count(self, what):
        if os.environ.get("KEMPELEN_FUZZ_DEBUG"):
            print("STEP", what)
        STATS[what] = STATS.get(what, 0) + 1

    # ------------------------------------------------------------ model helpers

    def _batch_id(self, ix):
        """An existing batch id or, one time in 16, the next, unknown one."""
        if ix % 16 == 15 or not self.batches:
            return len(self.batches) + 1
        return 1 + (ix // 16 + ix) % len(self.batches)

    def _next_time(self):
        """The timestamp of the next transaction, moved off any boundary the model compares it
        with, so that gas estimation (possibly at the latest block's time) and execution agree."""
        boundaries = {b["deadline"] for b in self.batches.values()}
        boundaries |= {self._review_deadline(k) for k, s in self.answers.items() if s == PENDING}
        t = now()
        while any(t - 1 <= x <= t + 2 for x in boundaries):
            t += 4
            mine_at(t)
        return t + 1

    def _review_deadline(self, key):
        batch_id, who, task = key
        return self.submitted_at[(batch_id, who, task // GROUP)] + self.batches[batch_id]["window"]

    def _credit(self, token, account, amount):
        self.balances[(token, str(account))] = self.balances.get((token, str(account)), 0) + amount

    def _record(self, who, requester, outcome, count=1):
        for book, key in ((self.worker_rep, str(who)), (self.requester_rep, str(requester))):
            book.setdefault(key, [0, 0, 0])[outcome] += count

    def _score(self, who):
        rep = self.worker_rep.get(str(who), [0, 0, 0])
        return rep[0] + rep[2]

    def _other_requester(self, requester):
        return next(str(r) for r in self.requesters if str(r) != requester)

    def _send(self, fn, args, tx_params, expect_revert):
        """`fn(*args)`; expect_revert: False, True (any revert) or the exact revert message."""
        tx_params = dict(tx_params, **{"from": accounts.at(str(tx_params["from"]))})
        if isinstance(expect_revert, str):
            self._count(f"{fn._name}:{expect_revert.split(':')[0]}")
        else:
            self._count(f"{fn._name}:{'revert' if expect_revert else 'ok'}")
        if expect_revert:
            with brownie.reverts(expect_revert if isinstance(expect_revert, str) else None):
                fn(*args, tx_params)
            return None
        return fn(*args, tx_params)

    def _pay(self, token, amount, requester):
        """Transaction params that bring `amount` of `token` from `requester`."""
        if token == ETH:
            return {"from": requester, "value": amount}
        if amount:
            self.usdc.mint(requester, amount, {"from": accounts.at(str(requester))})
        return {"from": requester}

    # ------------------------------------------------------------ batches

    def act_create(
        self,
        st_token,
        st_ix,
        st_task_count,
        st_per_task,
        st_reward,
        st_fee,
        st_offset,
        st_window,
        st_min_rep,
    ):
        token = self.tokens[st_token]
        requester = self.requesters[st_ix % 2]
        deposit = st_task_count * st_per_task * (st_reward + st_fee)
        params = self._pay(token, deposit, requester)
        t = self._next_time()
        deadline = t + st_offset
        terms = (
            token,
            st_task_count,
            st_per_task,
            st_reward,
            st_fee,
            deadline,
            st_window,
            st_min_rep,
            bytes(32),
            b"\x01\x55\x12\x20" + bytes(32),
        )
        tx = self.escrow.createBatch(terms, params)
        assert tx.timestamp == t
        batch_id = tx.events["BatchCreated"]["batchId"]
        assert batch_id == len(self.batches) + 1
        assert tx.events["BatchCreated"]["deposit"] == deposit
        self.batches[batch_id] = dict(
            requester=str(requester),
            token=token,
            task_count=st_task_count,
            per_task=st_per_task,
            reward=st_reward,
            fee=st_fee,
            deadline=deadline,
            window=st_window,
            min_rep=st_min_rep,
            funds=deposit,
            pending=0,
        )

    def act_extend(self, st_ix, st_delay, st_grow, st_amount, st_honest):
        if not self.batches:
            return
        batch_id = self._batch_id(st_ix)
        b = self.batches.get(batch_id)
        if b is None:
            b = {
                "deadline": now(),
                "per_task": 1,
                "requester": str(self.requesters[0]),
                "token": ETH,
            }
        caller = b["requester"] if st_honest else self._other_requester(b["requester"])
        deadline = b["deadline"] + st_delay if st_delay >= 0 else b["deadline"] - 1
        per_task = min(b["per_task"] + st_grow, 255) if st_amount % 11 else b["per_task"] - 1
        top_up = st_amount if st_amount % 3 else 0
        params = self._pay(b["token"], top_up, caller)
        self._next_time()
        fails = (
            batch_id not in self.batches
            or caller != b["requester"]
            or deadline < b["deadline"]
            or per_task < b["per_task"]
        )
        tx = self._send(self.escrow.extend, (batch_id, deadline, per_task, top_up), params, fails)
        if tx is None:
            return
        event = tx.events["BatchExtended"]
        assert (event["deadline"], event["answersPerTask"], event["topUp"]) == (
            deadline,
            per_task,
            top_up,
        )
        b.update(deadline=deadline, per_task=per_task, funds=b["funds"] + top_up)

    def act_reclaim(self, st_ix, st_honest):
        """Honest: wait out the deadline and every review window, release what is pending, reclaim."""
        if not self.batches:
            return
        batch_id = self._batch_id(st_ix)
        b = self.batches.get(batch_id)
        caller = (
            self.requesters[st_ix % 2]
            if b is None
            else (b["requester"] if st_honest else str(self.stranger))
        )
        if b is not None and st_honest and st_ix % 3:
            pending = sorted(
                k for k, v in self.answers.items() if k[0] == batch_id and v == PENDING
            )
            mine_at(
                max([now(), b["deadline"] + 1] + [self._review_deadline(k) + 1 for k in pending])
            )
            if pending:
                self._settle(self.escrow.release, 2, batch_id, sets([(w, t) for _, w, t in pending]),
                             str(self.stranger))
        t = self._next_time()
        fails = (
            b is None
            or caller != b["requester"]
            or t <= b["deadline"]
            or b["pending"]
            or not b["funds"]
        )
        before = None if fails else token_balance(b["token"], caller)
        tx = self._send(self.escrow.reclaim, (batch_id,), {"from": caller}, fails)
        if tx is None:
            return
        amount = b["funds"]
        assert tx.events["BatchReclaimed"]["amount"] == amount
        gas = tx.gas_used * tx.gas_price if b["token"] == ETH else 0
        assert token_balance(b["token"], caller) == before + amount - gas
        b["funds"] = 0

    def act_bonus(self, st_ix, st_amount, st_honest):
        if not self.batches:
            return
        batch_id = self._batch_id(st_ix)
        b = self.batches.get(batch_id)
        who = self.workers[st_ix % 4]
        caller = (
            str(self.requesters[0])
            if b is None
            else (b["requester"] if st_honest else str(self.stranger))
        )
        token = ETH if b is None else b["token"]
        params = self._pay(token, st_amount, caller)
        self._next_time()
        fails = b is None or caller != b["requester"]
        tx = self._send(self.escrow.bonus, (batch_id, who, st_amount, REASON_CID), params, fails)
        if tx is None:
            return
        event = tx.events["BonusPaid"]
        assert (event["batchId"], event["worker"], event["amount"]) == (batch_id, who, st_amount)
        self._credit(token, who, st_amount)

    def act_block(self, st_ix):
        requester, who = self.requesters[st_ix % 2], self.workers[(st_ix // 2) % 4]
        key = (str(requester), str(who))
        if key in self.blocked:
            self.escrow.unblockWorker(who, {"from": requester})
            self.blocked.discard(key)
        else:
            self.escrow.blockWorker(who, REASON_CID, {"from": requester})
            self.blocked.add(key)

    # ------------------------------------------------------------ answers

    def _sign(self, batch_id, who, task, kind, salt):
        payload = b"%d/%d/%s/%d" % (batch_id, task, str(who).encode(), salt)
        if kind == "forged":  # the thief signs in the worker's name
            return signed_answer(
                self.escrow, self.thief, batch_id, task, payload, worker_address=who.address
            )
        if kind == "wrong_domain":
            return signed_answer(self.escrow, who, batch_id, task, payload, chain_id=chain.id + 1)
        answer, signature = signed_answer(self.escrow, who, batch_id, task, payload)
        if kind == "compact":
            signature = to_compact(signature)
        elif kind == "high_s":
            signature = _high_s(signature)
        return answer, signature

    def act_submit(self, st_ix, st_answers):
        if not self.batches:
            return
        relay = self.relays[st_ix % 2]
        batch_ids = [self._batch_id(st_ix + i * (st_ix // 7)) for i in range(len(st_answers))]
        answers = []
        for bid, (w, task_pick, kind) in zip(batch_ids, st_answers):
            b = self.batches.get(bid)
            # Mostly a task of the batch; sometimes one from across status/count words, maybe out of range.
            task = (
                task_pick % b["task_count"]
                if b and task_pick % 5
                else TASK_INDEXES[task_pick % len(TASK_INDEXES)]
            )
            answers.append((w, task, kind))
        st_answers = answers
        signed = [
            self._sign(bid, self.workers[w], task, kind, i)
            for i, (bid, (w, task, kind)) in enumerate(zip(batch_ids, st_answers))
        ]
        t = self._next_time()
        # Predict each answer in order: accepted, or the set of reasons that may be given; and
        # the call's logs in order (TaskEscrow._submit): an answer's overdue release and its
        # AnswerSkipped come at once; an accepted answer joins the open run, logged as one
        # AnswersSubmitted when an answer of another batch comes, when an accepted answer cannot
        # extend it (another worker or group of 96 tasks, or not a later task), or at the end.
        expected, fees = [], {}
        released = []
        logs = []  # ("AnswersReleased", batch, worker, firstTask, tasks) | ("AnswerSkipped", batch,
        # worker, task) | ("AnswersSubmitted", batch, worker, relayer, firstTask, tasks, digests)
        run = []  # the open run: (batch, worker, task, digest) of its accepted answers

        def close_run():
            if run:
                first = run[0][2] - run[0][2] % GROUP
                tasks = sum(1 << (a[2] - first) for a in run)
                digests = tuple(a[3] for a in run)
                logs.append(("AnswersSubmitted", run[0][0], run[0][1], str(relay), first, tasks, digests))
                self._count(f"submit:run_of_{len(run)}")
                run.clear()

        for (answer, _), bid, (w, task, kind) in zip(signed, batch_ids, st_answers):
            who, b = str(self.workers[w]), self.batches.get(bid)
            if run and run[-1][0] != bid:
                close_run()
            if b is None:
                expected.append({UNKNOWN_BATCH})
                logs.append(("AnswerSkipped", bid, who, task))
                continue
            if task < b["task_count"]:
                keys = self._release_overdue(bid, who, task, t)
                if keys:
                    first = task - task % GROUP
                    tasks = sum(1 << (k[2] - first) for k in keys)
                    logs.append(("AnswersReleased", bid, who, first, tasks))
                released += keys
            reasons = set()
            if t > b["deadline"]:
                reasons.add(PAST_DEADLINE)
            if task >= b["task_count"]:
                reasons.add(TASK_OUT_OF_RANGE)
            else:
                if self.answers.get((bid, who, task), NONE) != NONE:
                    reasons.add(ALREADY_ANSWERED)
                if self.counts.get((bid, task), 0) >= b["per_task"]:
                    reasons.add(TASK_FULL)
            if b["funds"] < b["reward"] + b["fee"]:
                reasons.add(INSUFFICIENT_FUNDS)
            if kind not in ("valid", "compact"):
                reasons.add(BAD_SIGNATURE)
            if (b["requester"], who) in self.blocked:
                reasons.add(WORKER_BLOCKED)
            if b["min_rep"] and self._score(who) < b["min_rep"]:
                reasons.add(REPUTATION_TOO_LOW)
            expected.append(reasons)
            if reasons:
                logs.append(("AnswerSkipped", bid, who, task))
            else:
                last = run[-1] if run else None
                if last and (last[1] != who or last[2] // GROUP != task // GROUP or task <= last[2]):
                    close_run()
                run.append((bid, who, task, bytes(answer[2])))
                self.answers[(bid, who, task)] = PENDING
                self.submitted_at[(bid, who, task // GROUP)] = t
                self.counts[(bid, task)] = self.counts.get((bid, task), 0) + 1
                b["funds"] -= b["reward"] + b["fee"]
                b["pending"] += 1
                fees[b["token"]] = fees.get(b["token"], 0) + b["fee"]
        close_run()

        tx = self.escrow.submitAnswers(
            [a for a, _ in signed], [s for _, s in signed], {"from": relay}
        )
        assert tx.timestamp == t
        # Answers whose window had closed were released before a later answer of their worker
        # could move the group's clock (never a second window for the requester).
        got = reviewed(tx, "AnswersReleased")
        assert got == released, (got, released)
        for reasons in expected:
            self._count(f"submit:{'skip' if reasons else 'ok'}")
        got, skip_reasons = [], []
        for e in tx.events:
            if e.name == "AnswersReleased":
                got.append((e.name, e["batchId"], e["worker"], e["firstTask"], e["tasks"]))
            elif e.name == "AnswerSkipped":
                got.append((e.name, e["batchId"], e["worker"], e["taskIndex"]))
                skip_reasons.append(e["reason"])
            elif e.name == "AnswersSubmitted":
                digests = tuple(bytes(d) for d in e["answerDigests"])
                got.append((e.name, e["batchId"], e["worker"], e["relayer"], e["firstTask"], e["tasks"], digests))
        assert got == logs, (got, logs)
        for reason, reasons in zip(skip_reasons, [r for r in expected if r], strict=True):
            assert reason in reasons, (reason, reasons)
            self._count(f"skip:{SKIP_NAMES[reason]}")
        # Flattened, the runs name the accepted answers in submission order, each once.
        assert submitted(tx) == [
            (answer[3], answer[1], bytes(answer[2]))
            for (answer, _), reasons in zip(signed, expected) if not reasons
        ]
        for token, amount in fees.items():
            self._credit(token, relay, amount)

    def _release_overdue(self, bid, who, task, t):
        """The model of TaskEscrow._releaseOverdue: the keys it releases, in task order."""
        group = (bid, who, task // GROUP)
        b = self.batches[bid]
        if group not in self.submitted_at or t <= self.submitted_at[group] + b["window"]:
            return []
        keys = sorted(k for k, s in self.answers.items()
                      if s == PENDING and k[0] == bid and k[1] == who and k[2] // GROUP == task // GROUP)
        for key in keys:
            self.answers[key] = PAID
            b["pending"] -= 1
            self._record(who, b["requester"], 2)
            assert key not in self.paid, f"answer {key} paid twice"
            self.paid.add(key)
            self._credit(b["token"], who, b["reward"])
        return keys

    def _review(self, fn, outcome, st_ix, st_picks, st_honest, st_encoding, *extra):
        """approve (outcome 0), reject (1) or release (2) a pick of the batch's answers.

        Honest picks are pending answers (for a release, after their review deadlines: time is
        moved on); dishonest ones come from any answer of the batch, from a non-requester."""
        if not self.batches:
            return
        batch_id = self._batch_id(st_ix)
        b = self.batches.get(batch_id)
        keys = sorted(k for k in self.answers if k[0] == batch_id)
        pending = [k for k in keys if self.answers[k] == PENDING]
        if st_honest and pending:
            if outcome != 2:
                t = now() + 2
                pending = [k for k in pending if self._review_deadline(k) > t + 2] or pending
            keys = pending
        if not keys and b is not None:
            return
        picks = (
            [keys[p % len(keys)] for p in st_picks]
            if keys
            else [(batch_id, str(self.workers[0]), 0)]
        )
        if st_honest:
            picks = list(dict.fromkeys(picks))
        # Dishonest: any answers, from the requester (double approval, late rejection...) or not.
        if outcome == 2:
            caller = str(self.relays[st_ix % 2]) if st_honest or st_ix % 3 else str(self.stranger)
            if st_honest and b is not None:
                mine_at(max([now()] + [self._review_deadline(k) + 1 for k in picks]))
        else:
            caller = b["requester"] if b and (st_honest or st_ix % 3) else str(self.stranger)
        encoding = st_encoding if not st_honest else st_encoding % 3
        task_sets = self._encode(picks, encoding, st_ix)
        self._count(f"review:encoding_{encoding}:{len(task_sets)}_sets")
        self._settle(fn, outcome, batch_id, task_sets, caller, *extra)

    def _encode(self, picks, encoding, ix):
        """TaskSet tuples naming `picks` [(batch, worker, task)] in the order given (see st_encoding)."""
        pairs = [(who, task) for _, who, task in picks]
        if encoding == 0 and len(set(pairs)) == len(pairs):
            return sets(pairs)
        if encoding == 1:
            return [(who, task - task % GROUP, 1 << task % GROUP) for who, task in pairs]
        runs = []  # encoding 2, and 0 with an answer picked twice (task_sets refuses those)
        for who, task in pairs:
            first, bit = task - task % GROUP, 1 << task % GROUP
            if runs and runs[-1][:2] == (who, first) and not runs[-1][2] & bit:
                runs[-1] = (who, first, runs[-1][2] | bit)
            else:
                runs.append((who, first, bit))
        if encoding == 3:  # one malformed set: firstTask off the group, no task, or a bit past 96
            i = ix % len(runs)
            who, first, tasks = runs[i]
            runs[i] = [
                (who, first + 1 + ix % (GROUP - 1), tasks),
                (who, first, 0),
                (who, first, tasks | 1 << (GROUP + ix % (256 - GROUP))),
            ][(ix // 4) % 3]
        return runs

    def _review_error(self, outcome, batch_id, task_sets, caller, t):
        """The revert message of TaskEscrow._review for this call at time `t`, or None."""
        b = self.batches.get(batch_id)
        if b is None:
            return f"EscrowUnknownBatch: {batch_id}"
        if outcome != 2 and caller != b["requester"]:
            return f"EscrowNotRequester: {batch_id}, {caller.lower()}"
        reviewed_now = set()  # answers the call's earlier sets reviewed
        for who, first, tasks in task_sets:
            if first % GROUP or tasks == 0 or tasks >> GROUP:
                return f"EscrowInvalidTaskSet: {batch_id}, {who.lower()}, {first}, {tasks}"
            named = set_tasks(first, tasks)
            for task in named:  # ascending: the lowest answer not pending names the error
                key = (batch_id, who, task)
                state = [PAID, REJECTED, PAID][outcome] if key in reviewed_now else self.answers.get(key, NONE)
                if state != PENDING:
                    return f"EscrowAnswerNotPending: {batch_id}, {who.lower()}, {task}, {state}"
            deadline = self._review_deadline((batch_id, who, first))
            if outcome == 2 and t <= deadline:
                return f"EscrowReviewWindowOpen: {batch_id}, {who.lower()}, {named[0]}, {deadline}"
            if outcome != 2 and t > deadline:
                return f"EscrowReviewWindowClosed: {batch_id}, {who.lower()}, {named[0]}, {deadline}"
            reviewed_now.update((batch_id, who, task) for task in named)
        return None

    def _settle(self, fn, outcome, batch_id, task_sets, caller, *extra):
        b = self.batches.get(batch_id)
        t = self._next_time()
        error = self._review_error(outcome, batch_id, task_sets, caller, t)
        tx = self._send(fn, (batch_id, task_sets) + extra, {"from": caller}, error or False)
        if tx is None:
            return
        assert tx.timestamp == t
        name = ["AnswersApproved", "AnswersRejected", "AnswersReleased"][outcome]
        logs, records = [], []  # one review event per set; one record per run of a worker's sets
        for who, first, tasks in task_sets:
            logs.append((batch_id, who, first, tasks))
            if records and records[-1][0] == who:
                records[-1][1] += bin(tasks).count("1")
            else:
                records.append([who, bin(tasks).count("1")])
            for task in set_tasks(first, tasks):
                key = (batch_id, who, task)
                self.answers[key] = [PAID, REJECTED, PAID][outcome]
                b["pending"] -= 1
                self._record(who, b["requester"], outcome)
                if outcome == 1:
                    b["funds"] += b["reward"]
                    self.counts[(batch_id, task)] -= 1
                else:
                    assert key not in self.paid, f"answer {key} paid twice"
                    self.paid.add(key)
                    self._credit(b["token"], who, b["reward"])
        got = [(e["batchId"], e["worker"], e["firstTask"], e["tasks"]) for e in tx.events[name]] \
            if name in tx.events else []
        assert got == logs, (got, logs)
        if outcome == 1:
            assert all(bytes(e["reasonCid"]) == REASON_CID for e in tx.events[name])
        other = {"AnswersApproved", "AnswersRejected", "AnswersReleased"} - {name}
        assert not any(e.name in other for e in tx.events), "another review event"
        # Reputation: one record call, and one event, naming each run of a worker's consecutive sets.
        events = tx.events["OutcomesRecorded"] if "OutcomesRecorded" in tx.events else []
        got = [(e["requester"], e["outcome"], list(zip(e["workers"], e["counts"]))) for e in events]
        want = [(b["requester"], outcome, [(who, count) for who, count in records])] if records else []
        assert got == want, (got, want)

    def act_approve(self, st_ix, st_picks, st_honest, st_encoding):
        self._review(self.escrow.approve, 0, st_ix, st_picks, st_honest, st_encoding)

    def act_reject(self, st_ix, st_picks, st_honest, st_encoding):
        self._review(self.escrow.reject, 1, st_ix, st_picks, st_honest, st_encoding, REASON_CID)

    def act_release(self, st_ix, st_picks, st_honest, st_encoding):
        self._review(self.escrow.release, 2, st_ix, st_picks, st_honest, st_encoding)

    # ------------------------------------------------------------ money out, money in

    def act_withdraw(self, st_ix, st_token, st_honest):
        token = self.tokens[st_token]
        payees = self.workers + self.relays
        owed_ones = [a for a in payees if self.balances.get((token, str(a)), 0)]
        account = (
            owed_ones[st_ix % len(owed_ones)] if owed_ones and st_ix % 4 else payees[st_ix % 6]
        )
        owed = self.balances.get((token, str(account)), 0)
        self._next_time()
        if st_honest or owed == 0:
            before = token_balance(token, account)
            tx = self._send(self.escrow.withdraw, (token,), {"from": account}, owed == 0)
            if tx is None:
                return
            gas = tx.gas_used * tx.gas_price if token == ETH else 0
            assert token_balance(token, account) == before + owed - gas
        else:  # gasless: a stranger submits the account's signed authorization
            if account not in self.workers:
                return
            nonce = self.nonces.get(str(account), 0)
            deadline = now() + 100
            signature = withdrawal_signature(self.escrow, account, token, deadline, nonce=nonce)
            before = token_balance(token, account)
            tx = self.escrow.withdrawFor(
                account, token, deadline, signature, {"from": self.stranger}
            )
            assert token_balance(token, account) == before + owed
            self.nonces[str(account)] = nonce + 1
        assert (tx.events["Withdrawn"]["account"], tx.events["Withdrawn"]["amount"]) == (
            account,
            owed,
        )
        self.balances[(token, str(account))] = 0

    def act_sleep(self, st_sleep):
        mine_at(now() + st_sleep)

    def act_force_eth(self, st_ix):
        if st_ix % 8:  # rare
            return
        ForceSend.deploy(self.escrow, {"from": self.stranger, "value": 1 + st_ix})
        self.surplus[ETH] += 1 + st_ix

    # ------------------------------------------------------------ invariants

    def invariant_money_answers_reputation(self):
        """One JSON-RPC batch reads everything the model predicts, then every number is compared."""
        escrow, tokens = self.escrow, (ETH, self.usdc.address)
        batch_ids = sorted(self.batches)
        answer_keys, count_keys = sorted(self.answers), sorted(self.counts)
        seen = sorted(self.seen)
        calls = [(escrow.batchCount, ())]
        calls += [(escrow.batch, (i,)) for i in batch_ids]
        calls += [(escrow.balanceOf, (t, a)) for t in tokens for a in seen]
        calls += [(self.usdc.balanceOf, (escrow.address,))]
        calls += [(escrow.answerStatus, k) for k in answer_keys]
        calls += [(escrow.taskAnswerCount, k) for k in count_keys]
        calls += [(self.reputation.workerRecord, (w,)) for w in self.workers]
        calls += [(self.reputation.requesterRecord, (r,)) for r in self.requesters]
        results = iter(batch_call(calls))

        assert next(results) == len(batch_ids)  # batchCount: the model knows every batch
        locked = dict.fromkeys(tokens, 0)
        for batch_id in batch_ids:
            (requester, deadline, _, per_task, token, _, _, reward, _, funds, pending, _) = next(
                results
            )
            model = self.batches[batch_id]
            assert (requester, deadline, per_task, token, reward, funds, pending) == (
                model["requester"],
                model["deadline"],
                model["per_task"],
                model["token"],
                model["reward"],
                model["funds"],
                model["pending"],
            ), batch_id
            locked[token] += funds + pending * reward
        held = dict.fromkeys(tokens, 0)
        for token in tokens:
            for account in seen:
                balance = next(results)
                assert balance == self.balances.get((token, account), 0), (token, account)
                held[token] += balance
        actual = {
            ETH: int(
                web3.provider.make_request("eth_getBalance", [escrow.address, "latest"])["result"],
                16,
            ),
            self.usdc.address: next(results),
        }
        for token in tokens:
            # The money invariant, from the chain alone; surplus only what the model forced in.
            assert actual[token] == locked[token] + held[token] + self.surplus[token], (token, actual, locked, held)

        for key in answer_keys:
            state, review_deadline = next(results)
            assert state == self.answers[key], key
            assert review_deadline == self._review_deadline(key), key
        for key in count_keys:
            assert next(results) == self.counts[key], key
        for who in self.workers:
            assert list(next(results)) == self.worker_rep.get(str(who), [0, 0, 0]), who
        for requester in self.requesters:
            assert list(next(results)) == self.requester_rep.get(str(requester), [0, 0, 0]), (
                requester
            )


def test_escrow_matches_model(deployment):
    state_machine(
        EscrowModel,
        deployment,
        settings={
            "max_examples": EXAMPLES,
            "stateful_step_count": STEPS,
            "deadline": None,
            "suppress_health_check": HealthCheck.all(),
            # No example database: with one, hypothesis 6.27 spends a third of the run
            # "pareto-optimising" stored examples; falsifying steps are printed anyway.
            "database": None,
        },
    )
