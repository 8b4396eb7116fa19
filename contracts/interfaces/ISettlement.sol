// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Kempelen batch settlement: a requester-signed, cumulative Merkle payment path whose
/// on-chain cost per paid answer approaches zero (TaskEscrow implements it beside ITaskEscrow).
/// @notice The relay gathers workers' signed answers off-chain; at the end of an epoch the batch's
/// requester signs a Settlement (EIP-712, domain "Kempelen"/"1" of the escrow):
///   Settlement(uint64 batchId,uint32 sequence,bytes32 root,uint256 cumulativeTotal,bytes manifestCid,
///              SettledWord[] settled)SettledWord(address worker,uint32 wordIndex,uint256 bits)
/// and anyone posts it with `settle`. `settled` names the answers this settlement newly pays:
/// per worker, bitmaps of task indexes, 192 tasks per word (bit b of word w = task 192 * w + b),
/// sorted by (worker, wordIndex) without repeats. Each settled answer pays exactly batch.reward
/// to its worker and batch.relayFee to whoever posts the settlement (as submitAnswers pays its
/// sender); both come out of the batch's funds, so
///   cumulativeTotal == previous cumulativeTotal + newly settled answers * reward.
/// `root` is the root of an OpenZeppelin StandardMerkleTree (leafEncoding ["address","uint256"])
/// of (worker, cumulative earnings in this batch): leaf = keccak256(bytes.concat(keccak256(
/// abi.encode(worker, cumulative)))), sorted-pair hashing. `manifestCid` (binary) names the
/// settlement manifest listing every settled answer with its worker's signature and amount, so an
/// auditor can check root, leaves and totals against signed, content-addressed answers.
///
/// Workers (or anyone for them) `claimEarnings` with a proof against the batch's latest root: the escrow
/// credits cumulative - already claimed to the worker's escrow balance (withdraw/withdrawFor pay
/// it out). A claim never exceeds the worker's settled answers * reward in this batch, whatever
/// the root says, so a root can only ever pay a worker what its settled answers earned.
///
/// Sealed settled words: the escrow does not store which tasks a worker was paid for. It keeps one
/// record per (batch, worker): the worker's settled and claimed answer counts and a 192-bit digest
/// of its settled words,
///   chain_0 = 0, chain_k+1 = uint192(keccak256(abi.encode(chain_k, wordIndex, word))),
/// over the worker's nonzero words in ascending wordIndex (word = every bit settled so far). The
/// words themselves are in AnswersSettled. `settle` takes, unsigned, `before[i]`: the worker's
/// bits settled earlier in entry i's word. The escrow checks `before` against the digest (so a
/// worker with earlier settlements needs an entry for every word it has bits in; `bits` is 0 in
/// an entry that only restates one), refuses any overlap with `bits`, and stores the digest of
/// `before | bits`. That costs one storage word per worker instead of one per 192-task word.
///
/// One answer, one path: a settlement naming an answer that is pending or paid on the direct path
/// reverts. submitAnswers skips every answer of a worker whose words are sealed
/// (SkipReason.SettlementSealed) until anyone calls `openSettled` with the worker's words, checked
/// against the digest and stored; from then on its settled tasks are refused (AlreadyAnswered) and
/// its other answers take the direct path. An opened worker can still be settled: its entries are
/// checked against and written to the stored words (`before` is ignored for it, so an opening that
/// lands between a settlement's signing and its posting changes the cost, not the outcome). An
/// answer the requester neither settles nor rejects can still go open -> submit -> review -> release.
///
/// Money invariant (extends ITaskEscrow's), per token:
///   token balance of the escrow (- surplus nobody is owed) ==
///       sum over batches of (funds + pending * reward + cumulativeTotal - claimed in the batch)
///     + sum over accounts of balanceOf(token, account).
/// Settling moves value from a batch's funds to its claimable pool and the poster's balance;
/// claiming moves it from the pool to the worker's balance: what the escrow owes does not change.
interface ISettlement {
    /// Newly settled tasks of one worker: bit b set = task 192 * wordIndex + b is paid.
    struct SettledWord {
        address worker;
        uint32 wordIndex;
        uint256 bits; // only the low 192 bits may be set; 0 in an entry that restates earlier bits
    }

    /// What the batch's requester signs and anyone posts.
    struct Settlement {
        uint64 batchId;
        uint32 sequence; // strictly greater than the batch's last settlement's
        bytes32 root; // StandardMerkleTree root of (worker, cumulative earnings in the batch)
        uint256 cumulativeTotal; // everything settled in the batch so far, rewards only
        bytes manifestCid; // binary CID of the settlement manifest
        SettledWord[] settled; // answers newly settled, sorted by (worker, wordIndex)
    }

    /// One claim of `claimMany`.
    struct EarningsClaim {
        uint64 batchId;
        address worker;
        uint256 cumulative; // the worker's leaf amount in the batch's latest root
        bytes32[] proof;
    }

    /// A settlement of `batchId` was posted by `poster`: `amount` moved from the batch's funds to
    /// its claimable pool for `answers` newly settled answers, `relayFees` credited to the poster.
    event SettlementPosted(
        uint64 indexed batchId,
        uint32 indexed sequence,
        address indexed poster,
        bytes32 root,
        uint256 cumulativeTotal,
        uint256 amount,
        uint256 relayFees,
        uint32 answers,
        bytes manifestCid
    );
    /// The answers the settlement `sequence` of `batchId` newly pays (one event per settlement,
    /// emitted just before its SettlementPosted): the signed `settled` entries as posted.
    event AnswersSettled(uint64 indexed batchId, uint32 indexed sequence, SettledWord[] settled);
    /// `amount` (= cumulative - previously claimed) credited from the batch's pool to the worker.
    event EarningsClaimed(uint64 indexed batchId, address indexed worker, uint256 amount, uint256 cumulative);
    /// The worker's settled words in the batch were opened (stored): its other answers can now take
    /// the direct path; later settlements of it update the stored words.
    event SettledWordsOpened(uint64 indexed batchId, address indexed worker);

    error SettlementUnknownBatch(uint64 batchId);
    error SettlementInvalidSigner(uint64 batchId, address requester, address recovered);
    error SettlementStaleSequence(uint64 batchId, uint32 sequence, uint32 lastSequence);
    error SettlementEmptyRoot(uint64 batchId);
    error SettlementUnsorted(uint64 batchId, uint256 index);
    error SettlementInvalidWorker(uint64 batchId, uint256 index);
    error SettlementTaskOutOfRange(uint64 batchId, address worker, uint32 wordIndex);
    error SettlementAlreadySettled(uint64 batchId, address worker, uint32 taskIndex);
    /// An entry with no bits before or now.
    error SettlementEmptyWord(uint64 batchId, address worker, uint32 wordIndex);
    /// The worker's earlier settled words (`before`, or openSettled's `words`) do not match its
    /// digest: missing, extra or wrong words, or (openSettled) the worker has nothing settled or is
    /// already opened. worker is address(0) when `before` has the wrong length.
    error SettlementPriorMismatch(uint64 batchId, address worker);
    /// The answer is pending or paid on the direct path (submitAnswers): it cannot be settled too.
    error SettlementAnsweredDirectly(uint64 batchId, address worker, uint32 taskIndex);
    error SettlementWrongTotal(uint64 batchId, uint256 expected, uint256 cumulativeTotal);
    error SettlementInsufficientFunds(uint64 batchId, uint256 needed, uint256 funds);
    error SettlementNoRoot(uint64 batchId);
    error SettlementInvalidProof(uint64 batchId, address worker, uint256 cumulative);
    /// Leaves pay whole answers: cumulative must be a multiple of the batch's reward.
    error SettlementUnevenAmount(uint64 batchId, uint256 cumulative, uint256 reward);
    error SettlementClaimExceedsSettled(uint64 batchId, address worker, uint256 cumulative, uint256 settled);
    error SettlementNothingToClaim(uint64 batchId, address worker, uint256 cumulative, uint256 claimed);

    /// Anyone posts the requester's signed settlement (65-byte or 64-byte EIP-2098 signature).
    /// `before[i]` is the worker's bits settled earlier in settled[i]'s word (not signed: the
    /// worker's digest fixes it); one per entry, ignored for a worker whose words are opened.
    function settle(Settlement calldata settlement, uint256[] calldata before, bytes calldata signature) external;
    /// Anyone stores a worker's settled words in a batch (words[j] = its bits of word j, all of
    /// them), checked against its digest, so that its unsettled answers can take the direct path.
    function openSettled(uint64 batchId, address worker, uint256[] calldata words) external;
    /// Credits cumulative - claimed to `worker`'s escrow balance; anyone may call (the money only
    /// ever goes to the worker). Returns the amount credited. (Named after EarningsClaimed; its
    /// selector is also the third the dispatcher compares, 440 gas sooner than `claim`'s would be.)
    function claimEarnings(uint64 batchId, address worker, uint256 cumulative, bytes32[] calldata proof)
        external
        returns (uint256 amount);
    /// Several claims (batches, workers) in one call; returns the total credited.
    function claimMany(EarningsClaim[] calldata claims) external returns (uint256 total);

    /// The batch's latest settlement: sequence 0 and root 0 before the first.
    function settlementOf(uint64 batchId)
        external
        view
        returns (uint32 sequence, bytes32 root, uint256 cumulativeTotal);
    /// A worker's settled and claimed earnings in a batch (settled answers * reward, claimed).
    function earningsOf(uint64 batchId, address worker) external view returns (uint256 settled, uint256 claimed);
}
