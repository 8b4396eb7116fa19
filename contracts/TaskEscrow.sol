// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {Multicall} from "@openzeppelin/contracts/utils/Multicall.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IReputation} from "./interfaces/IReputation.sol";
import {ITaskEscrow} from "./interfaces/ITaskEscrow.sol";
import {BatchSettlement} from "./BatchSettlement.sol";

/// @title Escrow of labeling batches: deposits, relayed signed answers, review, pull payments.
/// @dev Answer state is packed: one word per (batch, worker, group of 96 tasks) holds 2 status
/// bits per task in its low 192 bits and the worker's latest submission time in that group in
/// its top 64 bits, so an answer costs a fresh slot only once per worker and group. Per-task
/// answer counts are uint8s packed 32 to a word. Documented in ITaskEscrow. The second payment
/// path, requester-signed settlements with Merkle claims, lives in BatchSettlement (ISettlement).
contract TaskEscrow is ITaskEscrow, EIP712("Kempelen", "1"), Nonces, ReentrancyGuardTransient, BatchSettlement, Multicall {
    using SafeERC20 for IERC20;

    bytes32 private constant ANSWER_TYPEHASH =
        keccak256("Answer(uint64 batchId,uint32 taskIndex,bytes32 answerDigest,address worker)");
    bytes32 private constant WITHDRAWAL_TYPEHASH =
        keccak256("Withdrawal(address account,address token,uint256 nonce,uint256 deadline)");

    uint256 private constant TASKS_PER_WORD = 96; // 2 status bits each, below the timestamp
    uint256 private constant COUNTS_PER_WORD = 32; // uint8 answer counts
    uint256 private constant TIMESTAMP_SHIFT = 192;
    uint256 private constant STATUS_MASK = 3;
    /// The low bit of each task's 2-bit status in a word (96 tasks, below the timestamp).
    uint256 private constant PENDING_LANES = 0x555555555555555555555555555555555555555555555555;
    uint256 private constant PENDING = 1; // uint256(AnswerStatus.Pending)
    uint256 private constant PAID = 2;
    uint256 private constant REJECTED = 3;
    uint256 private constant BALANCE_SENTINEL = 1;

    IReputation private immutable _reputation;

    uint64 private _batchCount;
    mapping(uint64 batchId => BatchRecord) private _batches;
    /// key: batchId << 192 | (taskIndex / 96) << 160 | worker (see _answerKey)
    mapping(uint256 key => uint256) private _answerWords;
    /// key: batchId << 32 | taskIndex / 32
    mapping(uint256 key => uint256) private _answerCounts;
    /// balance + BALANCE_SENTINEL once an account was ever credited, 0 before: a withdrawal leaves
    /// the sentinel, so paying a returning worker rewrites a live slot (5,000 gas) instead of
    /// creating one (22,100) at every batch.
    mapping(address token => mapping(address account => uint256)) private _balances;
    mapping(address requester => mapping(address worker => bool)) private _blocked;
    /// Workers a requester blocks: while 0, submission skips the per-answer block-list lookup.
    mapping(address requester => uint256) private _blockedCount;

    /// A batch as stored: ITaskEscrow.Batch packed by who reads it. Slot 1 is all a claim reads
    /// (token, reward); slot 3 is what both payment paths read and write: funds, pending answers,
    /// the settlement path's state (settled answers, last sequence) and two flags the paths leave
    /// each other. Rewards and fees fit 96 bits (createBatch refuses more), pending and settled
    /// counts 40 bits (at most taskCount * answersPerTask < 2^40 answers are pending; settlements
    /// are checked).
    struct BatchRecord {
        address requester;
        uint40 deadline;
        uint32 reviewWindow;
        uint8 answersPerTask;
        address token;
        uint96 reward;
        uint96 relayFee;
        uint32 taskCount;
        uint32 minReputation;
        uint128 funds;
        uint40 pending;
        uint40 settledAnswers; // answers paid by settlements: cumulativeTotal = settledAnswers * reward
        uint32 settlementSequence; // of the latest settlement, 0 before the first
        bool answeredDirectly; // submitAnswers accepted an answer: settlements must look for conflicts
        bool settled; // a settlement was posted: submitAnswers must look for settled answers
        bytes32 goldCommitment;
    }

    /// The batch being submitted to, cached across a run of answers of the same batch
    /// (full-width fields: cheaper in memory than packed ones).
    struct SubmitRun {
        uint256 batchId;
        address requester; // address(0): unknown batch
        address token;
        uint256 deadline;
        uint256 taskCount;
        uint256 answersPerTask;
        uint256 minReputation;
        uint256 cost; // reward + relayFee, taken from funds per accepted answer
        uint256 relayFee;
        uint256 reward;
        uint256 reviewWindow;
        uint256 funds;
        uint256 pending;
        uint256 accepted;
        uint256 released; // overdue answers released on the way (see _releaseOverdue)
        bool screenBlocked; // the requester has blocked someone: look workers up
        bool checkSettled; // the batch has settlements: refuse answers they paid
        bytes32 domainSeparator;
        // The open AnswersSubmitted group: accepted answers of one worker to one group of 96
        // tasks, in ascending task order (answer key as in _answerKey; 0: none open).
        uint256 groupKey;
        uint256 groupTasks; // bit b: task firstTask + b
        uint256 groupSize;
        bytes32[] groupDigests; // capacity TASKS_PER_WORD, length set when the group is logged
    }

    /// Review of one batch's answers and the run of consecutive answers of one worker
    /// (credited together). Each run's outcome goes to the reputation contract in one call at
    /// the end (workers[i], counts[i] for the first `runs` runs; capacity: one per set).
    struct ReviewRun {
        uint256 batchId;
        address requester;
        address token;
        uint256 reward;
        uint256 reviewWindow;
        IReputation.Outcome outcome;
        uint256 flip; // xor turning a Pending status (01) into Paid (10) or Rejected (11)
        address worker; // of the current run
        uint256 count; // answers in the current run
        uint256 runs;
        address[] workers;
        uint64[] counts;
    }

    constructor(IReputation reputation_) {
        _reputation = reputation_;
    }

    // ---------------------------------------------------------------- batches

    function createBatch(BatchTerms calldata terms) external payable nonReentrant returns (uint64) {
        return _createBatch(terms, msg.value);
    }

    function permitDeposit(address token, uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s) external {
        // A permit front-run from the mempool is already spent: the allowance is what matters.
        try IERC20Permit(token).permit(msg.sender, address(this), value, deadline, v, r, s) {} catch {}
    }

    function extend(uint64 batchId, uint40 deadline, uint8 answersPerTask, uint256 topUp)
        external
        payable
        nonReentrant
    {
        BatchRecord storage b = _requesterBatch(batchId);
        if (deadline < b.deadline || answersPerTask < b.answersPerTask) revert EscrowInvalidExtension(batchId);
        uint256 funds = b.funds + topUp;
        if (funds > type(uint128).max) revert EscrowInvalidExtension(batchId);
        b.deadline = deadline;
        b.answersPerTask = answersPerTask;
        b.funds = uint128(funds);
        _deposit(b.token, topUp, msg.value);
        emit BatchExtended(batchId, deadline, answersPerTask, topUp);
    }

    function reclaim(uint64 batchId) external nonReentrant returns (uint256 amount) {
        BatchRecord storage b = _requesterBatch(batchId);
        if (block.timestamp <= b.deadline) revert EscrowDeadlineNotPassed(batchId, b.deadline);
        if (b.pending != 0) revert EscrowReviewsPending(batchId, b.pending);
        amount = b.funds;
        if (amount == 0) revert EscrowNothingToReclaim(batchId);
        b.funds = 0;
        _pay(b.token, msg.sender, amount);
        emit BatchReclaimed(batchId, msg.sender, amount);
    }

    function revealGold(uint64 batchId, bytes calldata goldCid, bytes32 salt) external {
        BatchRecord storage b = _requesterBatch(batchId);
        bytes32 commitment = b.goldCommitment;
        if (commitment == 0 || keccak256(abi.encodePacked(goldCid, salt)) != commitment) {
            revert EscrowGoldMismatch(batchId);
        }
        emit GoldRevealed(batchId, goldCid, salt);
    }

    function bonus(uint64 batchId, address worker, uint256 amount, bytes calldata reasonCid)
        external
        payable
        nonReentrant
    {
        BatchRecord storage b = _requesterBatch(batchId);
        if (worker == address(0)) revert EscrowInvalidTerms("worker");
        if (amount == 0) revert EscrowInvalidTerms("amount");
        address token = b.token;
        _deposit(token, amount, msg.value);
        _credit(token, worker, amount);
        emit BonusPaid(batchId, worker, amount, reasonCid);
    }

    // ---------------------------------------------------------------- answers

    function submitAnswers(Answer[] calldata answers, bytes[] calldata signatures)
        external
        nonReentrant
        returns (uint256 accepted)
    {
        uint256 count = answers.length;
        if (count != signatures.length) revert EscrowLengthMismatch(count, signatures.length);
        SubmitRun memory run;
        run.domainSeparator = _domainSeparatorV4();
        run.groupDigests = new bytes32[](TASKS_PER_WORD);
        for (uint256 i; i < count;) {
            uint256 batchId = _batchIdAt(answers, i);
            if (batchId != run.batchId) {
                accepted += _closeRun(run);
                _openRun(run, batchId);
            }
            _submit(run, answers, signatures, i);
            unchecked {
                ++i;
            }
        }
        accepted += _closeRun(run);
    }

    function approve(uint64 batchId, TaskSet[] calldata sets) external nonReentrant {
        _review(batchId, sets, IReputation.Outcome.Approved, "");
    }

    function reject(uint64 batchId, TaskSet[] calldata sets, bytes calldata reasonCid) external nonReentrant {
        if (reasonCid.length == 0) revert EscrowEmptyReason();
        _review(batchId, sets, IReputation.Outcome.Rejected, reasonCid);
    }

    function release(uint64 batchId, TaskSet[] calldata sets) external nonReentrant {
        _review(batchId, sets, IReputation.Outcome.Released, "");
    }

    // ---------------------------------------------------------------- workers

    function blockWorker(address worker, bytes calldata reasonCid) external {
        if (!_blocked[msg.sender][worker]) {
            _blocked[msg.sender][worker] = true;
            ++_blockedCount[msg.sender];
        }
        emit WorkerBlocked(msg.sender, worker, reasonCid);
    }

    function unblockWorker(address worker) external {
        if (_blocked[msg.sender][worker]) {
            _blocked[msg.sender][worker] = false;
            --_blockedCount[msg.sender];
        }
        emit WorkerUnblocked(msg.sender, worker);
    }

    function withdraw(address token) external nonReentrant returns (uint256) {
        return _withdraw(msg.sender, token);
    }

    function withdrawFor(address account, address token, uint256 deadline, bytes calldata signature)
        external
        nonReentrant
        returns (uint256)
    {
        if (block.timestamp > deadline) revert EscrowSignatureExpired(deadline);
        bytes32 digest = _hashTypedDataV4(
            keccak256(abi.encode(WITHDRAWAL_TYPEHASH, account, token, _useNonce(account), deadline))
        );
        address recovered = _recover(digest, signature);
        if (recovered != account) revert EscrowInvalidSigner(account, recovered);
        return _withdraw(account, token);
    }

    // ---------------------------------------------------------------- views

    function batch(uint64 batchId) external view returns (Batch memory) {
        BatchRecord storage b = _batches[batchId];
        return Batch({
            requester: b.requester,
            deadline: b.deadline,
            reviewWindow: b.reviewWindow,
            answersPerTask: b.answersPerTask,
            token: b.token,
            taskCount: b.taskCount,
            minReputation: b.minReputation,
            reward: b.reward,
            relayFee: b.relayFee,
            funds: b.funds,
            pending: b.pending,
            goldCommitment: b.goldCommitment
        });
    }

    function batchCount() external view returns (uint64) {
        return _batchCount;
    }

    function answerStatus(uint64 batchId, address worker, uint32 taskIndex)
        external
        view
        returns (AnswerStatus status, uint64 reviewDeadline)
    {
        uint256 word = _answerWords[_answerKey(batchId, worker, taskIndex)];
        status = AnswerStatus((word >> _statusShift(taskIndex)) & STATUS_MASK);
        if (status != AnswerStatus.None) {
            reviewDeadline = uint64(word >> TIMESTAMP_SHIFT) + _batches[batchId].reviewWindow;
        }
    }

    function taskAnswerCount(uint64 batchId, uint32 taskIndex) external view returns (uint8) {
        return uint8(_answerCounts[_countKey(batchId, taskIndex)] >> _countShift(taskIndex));
    }

    function balanceOf(address token, address account) external view returns (uint256) {
        uint256 stored = _balances[token][account];
        return stored == 0 ? 0 : stored - BALANCE_SENTINEL;
    }

    function isBlocked(address requester, address worker) external view returns (bool) {
        return _blocked[requester][worker];
    }

    function reputation() external view returns (address) {
        return address(_reputation);
    }

    // ---------------------------------------------------------------- internals: batches

    function _createBatch(BatchTerms calldata terms, uint256 value) private returns (uint64 batchId) {
        if (terms.taskCount == 0) revert EscrowInvalidTerms("taskCount");
        if (terms.answersPerTask == 0) revert EscrowInvalidTerms("answersPerTask");
        if (terms.reward == 0 || terms.reward > type(uint96).max) revert EscrowInvalidTerms("reward");
        if (terms.relayFee > type(uint96).max) revert EscrowInvalidTerms("relayFee");
        if (terms.deadline <= block.timestamp) revert EscrowInvalidTerms("deadline");
        if (terms.reviewWindow == 0) revert EscrowInvalidTerms("reviewWindow");
        if (terms.manifestCid.length == 0) revert EscrowInvalidTerms("manifestCid");
        uint256 deposit = _deposit(terms);
        if (deposit > type(uint128).max) revert EscrowInvalidTerms("deposit");

        batchId = ++_batchCount;
        _batches[batchId] = BatchRecord({
            requester: msg.sender,
            deadline: terms.deadline,
            reviewWindow: terms.reviewWindow,
            answersPerTask: terms.answersPerTask,
            token: terms.token,
            taskCount: terms.taskCount,
            minReputation: terms.minReputation,
            reward: uint96(terms.reward),
            relayFee: uint96(terms.relayFee),
            funds: uint128(deposit),
            pending: 0,
            settledAnswers: 0,
            settlementSequence: 0,
            answeredDirectly: false,
            settled: false,
            goldCommitment: terms.goldCommitment
        });
        _deposit(terms.token, deposit, value);
        _emitBatchCreated(batchId, terms, deposit);
    }

    function _emitBatchCreated(uint64 batchId, BatchTerms calldata terms, uint256 deposit) private {
        emit BatchCreated(
            batchId,
            msg.sender,
            terms.token,
            terms.taskCount,
            terms.answersPerTask,
            terms.reward,
            terms.relayFee,
            terms.deadline,
            terms.reviewWindow,
            terms.minReputation,
            terms.goldCommitment,
            deposit,
            terms.manifestCid
        );
    }

    function _deposit(BatchTerms calldata terms) private pure returns (uint256) {
        return uint256(terms.taskCount) * terms.answersPerTask * (uint256(terms.reward) + terms.relayFee);
    }

    /// Takes `amount` of `token` from msg.sender (ETH: exactly msg.value).
    function _deposit(address token, uint256 amount, uint256 value) private {
        if (token == address(0)) {
            if (value != amount) revert EscrowWrongDeposit(amount, value);
        } else {
            if (value != 0) revert EscrowUnexpectedValue(value);
            if (amount != 0) {
                uint256 before = IERC20(token).balanceOf(address(this));
                IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
                uint256 received = IERC20(token).balanceOf(address(this)) - before;
                if (received != amount) revert EscrowFeeOnTransferToken(token, amount, received);
            }
        }
    }

    function _requesterBatch(uint64 batchId) private view returns (BatchRecord storage b) {
        b = _batches[batchId];
        address requester = b.requester;
        if (requester == address(0)) revert EscrowUnknownBatch(batchId);
        if (requester != msg.sender) revert EscrowNotRequester(batchId, msg.sender);
    }

    // ---------------------------------------------------------------- internals: submission

    function _openRun(SubmitRun memory run, uint256 batchId) private view {
        BatchRecord storage b = _batches[uint64(batchId)];
        address requester = b.requester;
        run.batchId = batchId;
        run.requester = requester;
        run.deadline = b.deadline;
        run.answersPerTask = b.answersPerTask;
        run.token = b.token;
        run.taskCount = b.taskCount;
        run.minReputation = b.minReputation;
        run.relayFee = b.relayFee;
        run.reward = b.reward;
        run.reviewWindow = b.reviewWindow;
        run.cost = uint256(b.reward) + b.relayFee;
        run.funds = b.funds;
        run.pending = b.pending;
        run.accepted = 0;
        run.released = 0;
        run.screenBlocked = requester != address(0) && _blockedCount[requester] != 0;
        run.checkSettled = b.settled;
    }

    /// Writes back the run's batch funds and pending count and pays the relay its fees.
    function _closeRun(SubmitRun memory run) private returns (uint256 accepted) {
        _logGroup(run);
        accepted = run.accepted;
        if (accepted == 0 && run.released == 0) return 0;
        BatchRecord storage b = _batches[uint64(run.batchId)];
        b.funds = uint128(run.funds);
        b.pending = uint40(run.pending);
        b.answeredDirectly = true;
        uint256 fees = accepted * run.relayFee;
        if (fees != 0) _credit(run.token, msg.sender, fees);
    }

    /// Accepts or skips answers[i] of the run's batch, and says which.
    function _submit(SubmitRun memory run, Answer[] calldata answers, bytes[] calldata signatures, uint256 i)
        private
    {
        (uint64 batchId, uint32 taskIndex, bytes32 answerDigest, address worker) = _answerAt(answers, i);
        uint256 skip;
        if (run.requester == address(0)) {
            skip = 1 + uint256(SkipReason.UnknownBatch);
        } else if (taskIndex >= run.taskCount) {
            skip = 1 + uint256(SkipReason.TaskOutOfRange);
        } else {
            skip = _submitToTask(run, taskIndex, answerDigest, worker, _signatureAt(signatures, i));
        }
        if (skip != 0) emit AnswerSkipped(batchId, worker, taskIndex, SkipReason(skip - 1));
    }

    /// Accepts (and adds to the open AnswersSubmitted group) or skips an answer to a task of the
    /// run's known batch: 0, or 1 + the SkipReason why not. The worker's answer word for the
    /// task's group is read once, for the overdue release and for the answer itself.
    function _submitToTask(
        SubmitRun memory run,
        uint256 taskIndex,
        bytes32 answerDigest,
        address worker,
        bytes calldata signature
    ) private returns (uint256 skip) {
        uint256 key = _answerKey(run.batchId, worker, taskIndex);
        uint256 wordSlot = _slotOf(_answerWordsSlot(), key);
        uint256 word = _releaseOverdue(run, worker, taskIndex, wordSlot, _load(wordSlot));
        skip = _accept(run, taskIndex, answerDigest, worker, signature, wordSlot, word);
        if (skip == 0) _addToGroup(run, key, taskIndex, answerDigest);
    }

    /// Adds an accepted answer to the open AnswersSubmitted group, first logging that group if
    /// the answer cannot extend it (another worker or group, or not a later task: a task bit at
    /// or above its own is set).
    function _addToGroup(SubmitRun memory run, uint256 key, uint256 taskIndex, bytes32 answerDigest) private {
        uint256 bit;
        unchecked {
            bit = 1 << (taskIndex % TASKS_PER_WORD);
        }
        if (key != run.groupKey || run.groupTasks >= bit) {
            _logGroup(run);
            run.groupKey = key;
        }
        uint256 size = run.groupSize;
        bytes32[] memory digests = run.groupDigests;
        assembly ("memory-safe") {
            mstore(add(digests, shl(5, add(size, 1))), answerDigest) // size < TASKS_PER_WORD
        }
        unchecked {
            run.groupSize = size + 1;
        }
        run.groupTasks |= bit;
    }

    /// Emits AnswersSubmitted for the open group, if it holds answers, and empties it.
    function _logGroup(SubmitRun memory run) private {
        uint256 size = run.groupSize;
        if (size == 0) return;
        bytes32[] memory digests = run.groupDigests;
        assembly ("memory-safe") {
            mstore(digests, size)
        }
        uint256 key = run.groupKey;
        uint32 firstTask;
        unchecked {
            firstTask = uint32(((key >> 160) & type(uint32).max) * TASKS_PER_WORD); // see _answerKey
        }
        emit AnswersSubmitted(uint64(key >> 192), address(uint160(key)), msg.sender, firstTask, run.groupTasks, digests);
        run.groupSize = 0;
        run.groupTasks = 0;
    }

    /// Accepts one answer to a task of the run's known batch: 0, or 1 + the SkipReason why not.
    /// `word` is the worker's answer word for the task's group, stored at `wordSlot`. Cheap checks
    /// first, then the signature, the requester's block list and the worker's reputation.
    function _accept(
        SubmitRun memory run,
        uint256 taskIndex,
        bytes32 answerDigest,
        address worker,
        bytes calldata signature,
        uint256 wordSlot,
        uint256 word
    ) private returns (uint256) {
        if (block.timestamp > run.deadline) return 1 + uint256(SkipReason.PastDeadline);
        if (run.funds < run.cost) return 1 + uint256(SkipReason.InsufficientFunds);

        uint256 statusShift = _statusShift(taskIndex);
        if ((word >> statusShift) & STATUS_MASK != 0) return 1 + uint256(SkipReason.AlreadyAnswered);
        if (run.checkSettled) {
            uint256 settled = _settledState(run.batchId, worker, taskIndex);
            if (settled == SETTLED_OPENED) return 1 + uint256(SkipReason.AlreadyAnswered); // paid by a settlement
            if (settled == SETTLED_SEALED) return 1 + uint256(SkipReason.SettlementSealed);
        }
        uint256 countsSlot = _slotOf(_answerCountsSlot(), _countKey(run.batchId, taskIndex));
        uint256 counts = _load(countsSlot);
        uint256 countShift = _countShift(taskIndex);
        if ((counts >> countShift) & 0xff >= run.answersPerTask) return 1 + uint256(SkipReason.TaskFull);

        uint256 skip = _screenWorker(run, taskIndex, answerDigest, worker, signature);
        if (skip != 0) return skip;

        _store(
            wordSlot,
            (word & ~(type(uint256).max << TIMESTAMP_SHIFT)) | (block.timestamp << TIMESTAMP_SHIFT)
                | (PENDING << statusShift)
        );
        unchecked {
            _store(countsSlot, counts + (1 << countShift)); // count < answersPerTask <= 255: no carry
            run.funds -= run.cost;
            run.pending += 1;
            run.accepted += 1;
        }
        return 0;
    }

    /// Releases (pays, as `release` would) the worker's pending answers in taskIndex's group once
    /// their review window closed. Runs before an answer to the group is considered, since
    /// accepting it moves the group's clock and would give the requester a second window.
    /// Permissionless like `release`, so it does not matter whether that answer is then accepted.
    /// Returns the word as it is now (stored if it changed).
    function _releaseOverdue(SubmitRun memory run, address worker, uint256 taskIndex, uint256 wordSlot, uint256 word)
        private
        returns (uint256)
    {
        if ((word >> TIMESTAMP_SHIFT) + run.reviewWindow >= block.timestamp) return word; // window open
        uint256 overdue = word & PENDING_LANES & ~(word >> 1); // lanes whose status is 01
        if (overdue == 0) return word;
        uint256 count;
        uint256 tasks; // bit b: task first + b of the group
        uint256 lane;
        for (uint256 lanes = overdue; lanes != 0; lanes >>= 2) {
            if (lanes & 1 != 0) {
                tasks |= 1 << lane;
                ++count;
            }
            ++lane;
        }
        emit AnswersReleased(uint64(run.batchId), worker, uint32(taskIndex - taskIndex % TASKS_PER_WORD), tasks);
        word ^= overdue * (PENDING ^ PAID); // 01 -> 10 in each overdue lane
        _store(wordSlot, word);
        run.pending -= count;
        run.released += count;
        _credit(run.token, worker, count * run.reward);
        address[] memory workers = new address[](1);
        uint64[] memory counts = new uint64[](1);
        (workers[0], counts[0]) = (worker, uint64(count));
        _reputation.record(run.requester, IReputation.Outcome.Released, workers, counts);
        return word;
    }

    /// 0 if the worker signed the answer, is not blocked by the requester and has the
    /// reputation the batch asks for; 1 + the SkipReason otherwise.
    function _screenWorker(
        SubmitRun memory run,
        uint256 taskIndex,
        bytes32 answerDigest,
        address worker,
        bytes calldata signature
    ) private view returns (uint256) {
        address signer = _answerSigner(run.domainSeparator, run.batchId, taskIndex, answerDigest, worker, signature);
        if (signer != worker || signer == address(0)) return 1 + uint256(SkipReason.BadSignature);
        if (run.screenBlocked && _blocked[run.requester][worker]) return 1 + uint256(SkipReason.WorkerBlocked);
        if (run.minReputation != 0 && !_reputation.meets(worker, uint32(run.minReputation))) {
            return 1 + uint256(SkipReason.ReputationTooLow);
        }
        return 0;
    }

    /// Who signed the answer: the EIP-712 digest (as _hashTypedDataV4 with the domain separator
    /// hoisted out of the loop) and the signature split into (v, r, s) in one step, then
    /// ECDSA.tryRecover (low s, ecrecover). address(0) for any invalid signature or length.
    function _answerSigner(
        bytes32 domainSeparator,
        uint256 batchId,
        uint256 taskIndex,
        bytes32 answerDigest,
        address worker,
        bytes calldata signature
    ) private pure returns (address signer) {
        bytes32 typeHash = ANSWER_TYPEHASH;
        bytes32 digest;
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typeHash)
            mstore(add(m, 0x20), batchId)
            mstore(add(m, 0x40), taskIndex)
            mstore(add(m, 0x60), answerDigest)
            mstore(add(m, 0x80), worker)
            let structHash := keccak256(m, 0xa0)
            mstore(m, hex"1901") // MessageHashUtils.toTypedDataHash
            mstore(add(m, 0x02), domainSeparator)
            mstore(add(m, 0x22), structHash)
            digest := keccak256(m, 0x42)
            switch signature.length
            case 65 {
                r := calldataload(signature.offset)
                s := calldataload(add(signature.offset, 0x20))
                v := byte(0, calldataload(add(signature.offset, 0x40)))
            }
            case 64 {
                // EIP-2098: vs = (v - 27) << 255 | s
                r := calldataload(signature.offset)
                let vs := calldataload(add(signature.offset, 0x20))
                s := and(vs, sub(shl(255, 1), 1))
                v := add(shr(255, vs), 27)
            }
        }
        if (v == 0) return address(0); // neither 65 nor 64 bytes
        (signer,,) = ECDSA.tryRecover(digest, v, r, s);
    }

    /// answers[i] without re-validating the array per field: Answer is a static 4-word struct, so
    /// element i sits at answers.offset + 128 * i, inside calldata (checked on entry). Fields
    /// with dirty high bits are not a canonical encoding and revert, as Solidity's accessors do.
    function _answerAt(Answer[] calldata answers, uint256 i)
        private
        pure
        returns (uint64 batchId, uint32 taskIndex, bytes32 answerDigest, address worker)
    {
        uint256 rawBatchId;
        uint256 rawTaskIndex;
        uint256 rawWorker;
        assembly ("memory-safe") {
            let p := add(answers.offset, shl(7, i))
            rawBatchId := calldataload(p)
            rawTaskIndex := calldataload(add(p, 0x20))
            answerDigest := calldataload(add(p, 0x40))
            rawWorker := calldataload(add(p, 0x60))
        }
        if ((rawBatchId >> 64) | (rawTaskIndex >> 32) | (rawWorker >> 160) != 0) revert();
        return (uint64(rawBatchId), uint32(rawTaskIndex), answerDigest, address(uint160(rawWorker)));
    }

    /// answers[i].batchId, unvalidated: only compared here, _answerAt validates it.
    function _batchIdAt(Answer[] calldata answers, uint256 i) private pure returns (uint256 batchId) {
        assembly ("memory-safe") {
            batchId := calldataload(add(answers.offset, shl(7, i)))
        }
    }

    /// signatures[i]. An offset or length pointing past the calldata reads zeros: an invalid
    /// signature, skipped, never an out-of-bounds read.
    function _signatureAt(bytes[] calldata signatures, uint256 i) private pure returns (bytes calldata signature) {
        assembly ("memory-safe") {
            let start := add(signatures.offset, calldataload(add(signatures.offset, shl(5, i))))
            signature.length := calldataload(start)
            signature.offset := add(start, 0x20)
        }
    }

    // ---------------------------------------------------------------- internals: review

    /// Settles pending answers of one batch: approve, reject or release. Each set is one answer
    /// word, checked, rewritten and logged at once (2 status bits per task: the set's tasks spread
    /// to their lanes); consecutive sets of one worker share one balance update and one
    /// reputation record.
    function _review(
        uint64 batchId,
        TaskSet[] calldata sets,
        IReputation.Outcome outcome,
        bytes memory reasonCid
    ) private {
        BatchRecord storage b = _batches[batchId];
        ReviewRun memory run;
        run.requester = b.requester;
        if (run.requester == address(0)) revert EscrowUnknownBatch(batchId);
        if (outcome != IReputation.Outcome.Released && msg.sender != run.requester) {
            revert EscrowNotRequester(batchId, msg.sender);
        }
        run.batchId = batchId;
        run.outcome = outcome;
        run.token = b.token;
        run.reward = b.reward;
        run.reviewWindow = b.reviewWindow;
        run.flip = outcome == IReputation.Outcome.Rejected ? PENDING ^ REJECTED : PENDING ^ PAID;
        run.workers = new address[](sets.length);
        run.counts = new uint64[](sets.length);

        uint256 answers;
        for (uint256 i; i < sets.length;) {
            (address worker, uint256 firstTask, uint256 tasks) = _setAt(sets, i);
            answers += _reviewSet(run, worker, firstTask, tasks, reasonCid);
            unchecked {
                ++i;
            }
        }
        _creditRun(run);
        _recordRuns(run); // the reputation contract: immutable, ours, and this call is nonReentrant

        b.pending -= uint40(answers);
        if (outcome == IReputation.Outcome.Rejected) b.funds += uint128(answers * run.reward);
    }

    /// Reviews one set: every named answer must be pending, inside its review window (one clock
    /// per answer word) or, for a release, past it. Writes the word back, logs the set and adds
    /// its answers to the worker's run; returns how many.
    function _reviewSet(ReviewRun memory run, address worker, uint256 firstTask, uint256 tasks, bytes memory reasonCid)
        private
        returns (uint256 count)
    {
        uint64 batchId = uint64(run.batchId);
        if (firstTask % TASKS_PER_WORD != 0 || tasks == 0 || tasks >> TASKS_PER_WORD != 0) {
            revert EscrowInvalidTaskSet(batchId, worker, uint32(firstTask), tasks);
        }
        uint256 slot = _slotOf(_answerWordsSlot(), _answerKey(batchId, worker, firstTask));
        uint256 word = _load(slot);
        uint256 lanes = _lanes(tasks);
        uint256 wrong = (word & (lanes | (lanes << 1))) ^ lanes; // lanes whose status is not 01
        if (wrong != 0) {
            uint256 lane = _lowestBit(wrong) >> 1;
            revert EscrowAnswerNotPending(
                batchId, worker, uint32(firstTask + lane), AnswerStatus((word >> (lane << 1)) & STATUS_MASK)
            );
        }
        _checkReviewWindow(run, word, worker, firstTask + _lowestBit(tasks));
        if (worker != run.worker) {
            _creditRun(run);
            run.worker = worker;
            run.count = 0;
        }
        count = _popcount(tasks);
        unchecked {
            run.count += count;
        }
        _store(slot, word ^ (lanes * run.flip)); // each lane 01 -> 10 (paid) or 11 (rejected)
        IReputation.Outcome outcome = run.outcome;
        if (outcome == IReputation.Outcome.Approved) {
            emit AnswersApproved(batchId, worker, uint32(firstTask), tasks);
        } else if (outcome == IReputation.Outcome.Released) {
            emit AnswersReleased(batchId, worker, uint32(firstTask), tasks);
        } else {
            _reopenTasks(batchId, firstTask, tasks);
            emit AnswersRejected(batchId, worker, uint32(firstTask), tasks, reasonCid);
        }
    }

    /// Reverts unless the answer word's review window is open (approve, reject) or closed (release).
    function _checkReviewWindow(ReviewRun memory run, uint256 word, address worker, uint256 taskIndex) private view {
        uint256 reviewDeadline;
        unchecked {
            reviewDeadline = (word >> TIMESTAMP_SHIFT) + run.reviewWindow; // < 2^64 + 2^32
        }
        if (run.outcome == IReputation.Outcome.Released) {
            if (block.timestamp <= reviewDeadline) {
                revert EscrowReviewWindowOpen(uint64(run.batchId), worker, uint32(taskIndex), uint64(reviewDeadline));
            }
        } else if (block.timestamp > reviewDeadline) {
            revert EscrowReviewWindowClosed(uint64(run.batchId), worker, uint32(taskIndex), uint64(reviewDeadline));
        }
    }

    /// Rejected answers free their tasks' slots for other workers.
    function _reopenTasks(uint256 batchId, uint256 firstTask, uint256 tasks) private {
        for (uint256 b; tasks != 0; ++b) {
            if (tasks & 1 != 0) {
                uint256 taskIndex = firstTask + b;
                _answerCounts[_countKey(batchId, taskIndex)] -= 1 << _countShift(taskIndex);
            }
            tasks >>= 1;
        }
    }

    /// sets[i] of a static 3-word TaskSet array (bounds checked on entry, fields here).
    function _setAt(TaskSet[] calldata sets, uint256 i) private pure returns (address, uint256, uint256) {
        uint256 rawWorker;
        uint256 rawFirstTask;
        uint256 tasks;
        assembly ("memory-safe") {
            let p := add(sets.offset, mul(i, 0x60))
            rawWorker := calldataload(p)
            rawFirstTask := calldataload(add(p, 0x20))
            tasks := calldataload(add(p, 0x40))
        }
        if ((rawWorker >> 160) | (rawFirstTask >> 32) != 0) revert();
        return (address(uint160(rawWorker)), rawFirstTask, tasks);
    }

    /// Bit b of a task bitmap (b < 96) moved to bit 2b: the low bit of task b's status lane.
    function _lanes(uint256 tasks) private pure returns (uint256 x) {
        unchecked {
            x = tasks;
            x = (x | (x << 64)) & 0x0000000000000000ffffffffffffffff0000000000000000ffffffffffffffff;
            x = (x | (x << 32)) & 0x00000000ffffffff00000000ffffffff00000000ffffffff00000000ffffffff;
            x = (x | (x << 16)) & 0x0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff;
            x = (x | (x << 8)) & 0x00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff;
            x = (x | (x << 4)) & 0x0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f;
            x = (x | (x << 2)) & 0x3333333333333333333333333333333333333333333333333333333333333333;
            x = (x | (x << 1)) & 0x5555555555555555555555555555555555555555555555555555555555555555;
        }
    }

    /// Credits the run's rewards to its worker (unless rejected) and queues its outcome.
    function _creditRun(ReviewRun memory run) private {
        uint256 count = run.count;
        if (count == 0) return;
        if (run.outcome != IReputation.Outcome.Rejected) _credit(run.token, run.worker, count * run.reward);
        uint256 i = run.runs;
        run.workers[i] = run.worker; // runs <= sets: within capacity
        run.counts[i] = uint64(count);
        run.runs = i + 1;
    }

    /// Records the review's outcomes with the reputation contract, one call for all runs.
    function _recordRuns(ReviewRun memory run) private {
        uint256 runs = run.runs;
        if (runs == 0) return;
        address[] memory workers = run.workers;
        uint64[] memory counts = run.counts;
        assembly ("memory-safe") {
            mstore(workers, runs) // shrink to the runs filled (capacity was one per set)
            mstore(counts, runs)
        }
        _reputation.record(run.requester, run.outcome, workers, counts);
    }

    // ---------------------------------------------------------------- internals: payouts

    function _withdraw(address account, address token) private returns (uint256 amount) {
        uint256 slot = _balanceSlot(token, account);
        uint256 stored = _load(slot);
        if (stored <= BALANCE_SENTINEL) revert EscrowNothingToWithdraw(account, token);
        unchecked {
            amount = stored - BALANCE_SENTINEL;
        }
        _store(slot, BALANCE_SENTINEL);
        _pay(token, account, amount);
        emit Withdrawn(account, token, amount);
    }

    /// Adds to an account's balance; the first credit also sets the sentinel that stays behind.
    function _credit(address token, address account, uint256 amount) private {
        uint256 slot = _balanceSlot(token, account);
        uint256 stored = _load(slot);
        _store(slot, (stored == 0 ? BALANCE_SENTINEL : stored) + amount);
    }

    /// Storage slot of _balances[token][account], hashed once for its read and its write.
    function _balanceSlot(address token, address account) private pure returns (uint256 slot) {
        uint256 balancesSlot;
        assembly ("memory-safe") {
            balancesSlot := _balances.slot
        }
        return _slotOf(_slotOf(balancesSlot, uint160(token)), uint160(account));
    }

    function _pay(address token, address to, uint256 amount) private {
        if (token == address(0)) {
            Address.sendValue(payable(to), amount);
        } else {
            IERC20(token).safeTransfer(to, amount);
        }
    }

    // ---------------------------------------------------------------- internals: settlement hooks

    function _settlementTerms(uint64 batchId) internal view override returns (SettleTerms memory terms) {
        BatchRecord storage b = _batches[batchId];
        terms.requester = b.requester;
        terms.token = b.token;
        terms.taskCount = b.taskCount;
        terms.reward = b.reward;
        terms.relayFee = b.relayFee;
        terms.funds = b.funds;
        terms.answeredDirectly = b.answeredDirectly;
        terms.sequence = b.settlementSequence;
        terms.settledAnswers = b.settledAnswers;
    }

    function _claimTerms(uint64 batchId) internal view override returns (address token, uint256 reward) {
        BatchRecord storage b = _batches[batchId];
        return (b.token, b.reward);
    }

    function _recordSettlement(uint64 batchId, uint256 spent, uint32 sequence, uint256 settledAnswers)
        internal
        override
    {
        BatchRecord storage b = _batches[batchId];
        b.funds -= uint128(spent);
        b.settledAnswers = SafeCast.toUint40(settledAnswers);
        b.settlementSequence = sequence;
        b.settled = true;
    }

    function _creditAccount(address token, address account, uint256 amount) internal override {
        _credit(token, account, amount);
    }

    /// A 192-task settled word spans 6 whole answer-count words (32 tasks) and 2 answer words (96):
    /// where a count word is 0 no answer to its tasks is pending or paid, so only tasks that have
    /// direct answers cost a look at the worker's answer word.
    function _firstDirectAnswer(uint256 batchId, address worker, uint256 firstTask, uint256 bits)
        internal
        view
        override
        returns (uint256)
    {
        for (uint256 block_; block_ < TASKS_PER_SETTLED_WORD / COUNTS_PER_WORD; ++block_) {
            uint256 blockBits = (bits >> (block_ * COUNTS_PER_WORD)) & type(uint32).max;
            uint256 blockFirst = firstTask + block_ * COUNTS_PER_WORD;
            if (blockBits == 0 || _answerCounts[_countKey(batchId, blockFirst)] == 0) continue;
            uint256 word = _answerWords[_answerKey(batchId, worker, blockFirst)];
            for (uint256 b; b < COUNTS_PER_WORD; ++b) {
                if ((blockBits >> b) & 1 == 0) continue;
                uint256 status = (word >> _statusShift(blockFirst + b)) & STATUS_MASK;
                if (status == PENDING || status == PAID) return blockFirst + b;
            }
        }
        return type(uint256).max;
    }

    // ---------------------------------------------------------------- internals: packing

    function _answerWordsSlot() private pure returns (uint256 slot) {
        assembly ("memory-safe") {
            slot := _answerWords.slot
        }
    }

    function _answerCountsSlot() private pure returns (uint256 slot) {
        assembly ("memory-safe") {
            slot := _answerCounts.slot
        }
    }

    // Packing arithmetic cannot overflow: batchId < 2^64, taskIndex < 2^32, worker < 2^160.

    function _answerKey(uint256 batchId, address worker, uint256 taskIndex) private pure returns (uint256) {
        unchecked {
            return (batchId << 192) | ((taskIndex / TASKS_PER_WORD) << 160) | uint160(worker);
        }
    }

    function _statusShift(uint256 taskIndex) private pure returns (uint256) {
        unchecked {
            return (taskIndex % TASKS_PER_WORD) << 1;
        }
    }

    function _countKey(uint256 batchId, uint256 taskIndex) private pure returns (uint256) {
        return (batchId << 32) | (taskIndex >> 5); // taskIndex / COUNTS_PER_WORD
    }

    function _countShift(uint256 taskIndex) private pure returns (uint256) {
        return (taskIndex & (COUNTS_PER_WORD - 1)) << 3; // 8 bits per count
    }
}
