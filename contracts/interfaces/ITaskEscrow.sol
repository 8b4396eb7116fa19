// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Kempelen task escrow: requesters fund batches of labeling tasks, workers are
/// paid per approved answer, relays submit workers' EIP-712 signed answers for a fee.
/// @notice Money invariant, per token (address(0) = native ETH):
///   token balance of the escrow ==
///       sum over batches of (funds + pending * reward)   // locked in batches
///     + sum over accounts of balanceOf(token, account)    // owed to workers, relays
///     + sum over batches of (cumulativeTotal - claimed)    // settled, claimable (ISettlement)
///   plus any surplus nobody is owed (ETH forced in, tokens sent directly).
/// Tests check it after every step; the auditor checks it from events and balances alone (no
/// on-chain running total: it would cost every deposit and withdrawal 5,000 gas). No wei moves
/// without an event, and every payment event names the answers it pays for: (batchId, worker)
/// and its tasks, as a 96-task group's bitmap (TaskSet) for submissions and reviews.
///
/// An answer is identified by (batchId, worker, taskIndex): one answer per worker per task.
/// Review window: an answer may be approved or rejected by the requester until its review
/// deadline, and released (auto-approved) by anyone after it. The review deadline is the
/// worker's latest submission time within the same group of 96 tasks of the batch plus the
/// batch's review window (answers share one storage word per group to keep submission cheap;
/// a worker's later answer can therefore only delay, never shorten, an earlier answer's review).
/// A window never re-opens: before `submitAnswers` considers an answer, the worker's pending
/// answers in its group whose window has closed are released (AnswersReleased, as `release`).
interface ITaskEscrow {
    enum AnswerStatus {
        None,
        Pending, // submitted, reward held in the batch until review or release
        Paid, // approved or released: reward credited to the worker
        Rejected // reward returned to the batch's funds, slot reopened
    }

    /// Why `submitAnswers` skipped an answer instead of accepting it.
    enum SkipReason {
        UnknownBatch,
        PastDeadline,
        TaskOutOfRange,
        BadSignature,
        WorkerBlocked,
        ReputationTooLow,
        AlreadyAnswered,
        TaskFull,
        InsufficientFunds,
        /// The worker has settled answers in the batch whose words are still sealed (ISettlement):
        /// `openSettled` them first, then the worker's other answers can take the direct path.
        SettlementSealed
    }

    /// Terms a requester fixes when funding a batch.
    struct BatchTerms {
        address token; // ERC-20 paid in, or address(0) for native ETH
        uint32 taskCount;
        uint8 answersPerTask; // redundancy: answers accepted per task
        uint128 reward; // paid per approved or released answer; at most 2^96 - 1 (packed)
        uint128 relayFee; // paid per accepted answer to whoever submitted it; at most 2^96 - 1
        uint40 deadline; // last timestamp at which answers are accepted
        uint32 reviewWindow; // seconds the requester has to review an answer
        uint32 minReputation; // paid answers a worker needs (IReputation.meets)
        bytes32 goldCommitment; // keccak256(abi.encodePacked(goldCid, salt)), or 0 for none
        bytes manifestCid; // binary CID of the batch manifest (task payload CIDs, instructions)
    }

    /// A batch as stored. deposit == taskCount * answersPerTask * (reward + relayFee) at creation.
    struct Batch {
        address requester;
        uint40 deadline;
        uint32 reviewWindow;
        uint8 answersPerTask;
        address token;
        uint32 taskCount;
        uint32 minReputation;
        uint128 reward;
        uint128 relayFee;
        uint128 funds; // unallocated: pays future answers, reclaimable after the deadline
        uint64 pending; // answers awaiting review; pending * reward is held for them
        bytes32 goldCommitment;
    }

    /// What a worker signs (EIP-712, domain name "Kempelen", version "1", this chain, this escrow):
    /// Answer(uint64 batchId,uint32 taskIndex,bytes32 answerDigest,address worker)
    /// answerDigest is the sha2-256 digest of the answer payload: the answer's CID is
    /// CIDv1 raw (0x01 0x55 0x12 0x20 || answerDigest), payloads being at most one 256 KiB block.
    struct Answer {
        uint64 batchId;
        uint32 taskIndex;
        bytes32 answerDigest;
        address worker;
    }

    /// Names answers of one worker in one group of 96 tasks in review calls, as the review events
    /// do: task `firstTask + b` for every set bit b of `tasks` (firstTask a multiple of 96, b < 96,
    /// at least one bit).
    struct TaskSet {
        address worker;
        uint32 firstTask;
        uint256 tasks;
    }

    event BatchCreated(
        uint64 indexed batchId,
        address indexed requester,
        address indexed token,
        uint32 taskCount,
        uint8 answersPerTask,
        uint128 reward,
        uint128 relayFee,
        uint40 deadline,
        uint32 reviewWindow,
        uint32 minReputation,
        bytes32 goldCommitment,
        uint256 deposit,
        bytes manifestCid
    );
    /// Answers of one worker accepted into one group of 96 tasks by one submitAnswers call: task
    /// `firstTask + b` for every set bit b of `tasks` (firstTask a multiple of 96, b < 96), with
    /// `answerDigests` in ascending task order. Pays batch.relayFee per answer to `relayer` and
    /// holds batch.reward for each. One event per run of consecutive accepted answers of one
    /// worker and group in ascending task order (relays submit answers sorted that way), so a
    /// submission logs ~32 bytes per answer instead of a 4-topic log each.
    event AnswersSubmitted(
        uint64 indexed batchId,
        address indexed worker,
        address indexed relayer,
        uint32 firstTask,
        uint256 tasks,
        bytes32[] answerDigests
    );
    event AnswerSkipped(uint64 indexed batchId, address indexed worker, uint32 taskIndex, SkipReason reason);
    /// Review events name the answers of one worker in one group of 96 tasks at once: task
    /// `firstTask + b` for every set bit b of `tasks` (firstTask a multiple of 96, b < 96).
    /// One event per (worker, group) run of a review call, instead of one per answer, keeps a
    /// review at a few hundred gas of log per answer.
    /// Credits batch.reward per answer to the worker.
    event AnswersApproved(uint64 indexed batchId, address indexed worker, uint32 firstTask, uint256 tasks);
    /// Returns batch.reward per answer to the batch's funds and reopens each task's slot.
    event AnswersRejected(uint64 indexed batchId, address indexed worker, uint32 firstTask, uint256 tasks, bytes reasonCid);
    /// Credits batch.reward per answer to the worker after the review deadline passed unreviewed.
    event AnswersReleased(uint64 indexed batchId, address indexed worker, uint32 firstTask, uint256 tasks);
    event BonusPaid(uint64 indexed batchId, address indexed worker, uint256 amount, bytes reasonCid);
    event BatchExtended(uint64 indexed batchId, uint40 deadline, uint8 answersPerTask, uint256 topUp);
    event BatchReclaimed(uint64 indexed batchId, address indexed requester, uint256 amount);
    event GoldRevealed(uint64 indexed batchId, bytes goldCid, bytes32 salt);
    event WorkerBlocked(address indexed requester, address indexed worker, bytes reasonCid);
    event WorkerUnblocked(address indexed requester, address indexed worker);
    event Withdrawn(address indexed account, address indexed token, uint256 amount);

    error EscrowUnknownBatch(uint64 batchId);
    error EscrowNotRequester(uint64 batchId, address caller);
    error EscrowInvalidTerms(string field);
    error EscrowWrongDeposit(uint256 expected, uint256 received);
    error EscrowUnexpectedValue(uint256 value);
    error EscrowFeeOnTransferToken(address token, uint256 expected, uint256 received);
    error EscrowLengthMismatch(uint256 answers, uint256 signatures);
    error EscrowInvalidTaskSet(uint64 batchId, address worker, uint32 firstTask, uint256 tasks);
    error EscrowAnswerNotPending(uint64 batchId, address worker, uint32 taskIndex, AnswerStatus status);
    error EscrowReviewWindowClosed(uint64 batchId, address worker, uint32 taskIndex, uint64 reviewDeadline);
    error EscrowReviewWindowOpen(uint64 batchId, address worker, uint32 taskIndex, uint64 reviewDeadline);
    error EscrowEmptyReason();
    error EscrowDeadlineNotPassed(uint64 batchId, uint40 deadline);
    error EscrowReviewsPending(uint64 batchId, uint64 pending);
    error EscrowNothingToReclaim(uint64 batchId);
    error EscrowNothingToWithdraw(address account, address token);
    error EscrowInvalidExtension(uint64 batchId);
    error EscrowGoldMismatch(uint64 batchId);
    error EscrowSignatureExpired(uint256 deadline);
    error EscrowInvalidSigner(address account, address recovered);

    /// Funds a batch: deposit = taskCount * answersPerTask * (reward + relayFee), sent as
    /// msg.value for ETH or pulled with transferFrom for an ERC-20 (fee-on-transfer tokens revert).
    function createBatch(BatchTerms calldata terms) external payable returns (uint64 batchId);
    /// EIP-2612 permit of `value` of `token` from the caller to the escrow, for funding in one
    /// transaction: multicall([permitDeposit(...), createBatch(terms)]) (TaskEscrow is OpenZeppelin
    /// Multicall; ERC-20 batches only, as multicall is not payable). A permit that fails, e.g.
    /// one front-run from the mempool and so already spent, is ignored: the allowance is what counts.
    function permitDeposit(address token, uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s) external;

    /// Anyone relays workers' signed answers (65-byte or 64-byte EIP-2098 signatures).
    /// Invalid answers are skipped with AnswerSkipped; the rest are accepted. Returns accepted count.
    function submitAnswers(Answer[] calldata answers, bytes[] calldata signatures) external returns (uint256 accepted);
    /// Requester approves pending answers inside their review window; rewards credit the workers.
    /// Each set's answers must all be pending; a worker's consecutive sets are credited together.
    function approve(uint64 batchId, TaskSet[] calldata sets) external;
    /// Requester rejects pending answers inside their review window, with a reason (binary CID).
    function reject(uint64 batchId, TaskSet[] calldata sets, bytes calldata reasonCid) external;
    /// Anyone releases pending answers whose review deadline passed: auto-approval.
    function release(uint64 batchId, TaskSet[] calldata sets) external;
    /// Requester pays a worker a bonus in the batch's token from its own wallet.
    function bonus(uint64 batchId, address worker, uint256 amount, bytes calldata reasonCid) external payable;
    /// Requester extends a batch: a later (or equal) deadline, more (or equal) answers per task, a top-up.
    function extend(uint64 batchId, uint40 deadline, uint8 answersPerTask, uint256 topUp) external payable;
    /// Requester takes back unallocated funds after the deadline, once no answer awaits review.
    function reclaim(uint64 batchId) external returns (uint256 amount);
    /// Requester reveals the gold answers committed to at creation.
    function revealGold(uint64 batchId, bytes calldata goldCid, bytes32 salt) external;
    /// msg.sender (a requester) refuses further answers from `worker` in all its batches.
    function blockWorker(address worker, bytes calldata reasonCid) external;
    function unblockWorker(address worker) external;
    /// Pays msg.sender its whole balance in `token`.
    function withdraw(address token) external returns (uint256 amount);
    /// Pays `account` its whole balance; anyone submits the account's EIP-712 signature of
    /// Withdrawal(address account,address token,uint256 nonce,uint256 deadline): gasless for workers.
    function withdrawFor(address account, address token, uint256 deadline, bytes calldata signature)
        external
        returns (uint256 amount);

    function batch(uint64 batchId) external view returns (Batch memory);
    function batchCount() external view returns (uint64);
    function answerStatus(uint64 batchId, address worker, uint32 taskIndex)
        external
        view
        returns (AnswerStatus status, uint64 reviewDeadline);
    function taskAnswerCount(uint64 batchId, uint32 taskIndex) external view returns (uint8);
    function balanceOf(address token, address account) external view returns (uint256);
    function isBlocked(address requester, address worker) external view returns (bool);
    function reputation() external view returns (address);
}
