// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ISettlement} from "./interfaces/ISettlement.sol";

/// @title Requester-signed batch settlement with cumulative Merkle claims (documented in ISettlement).
/// @dev One record per (batch, worker): claimed answers << 224 | settled answers << 192 | the
/// 192-bit digest of its settled words (OPENED once they are stored in _settledWords). A claim
/// rewrites the slot the worker's first settlement created (5,000 gas) instead of creating one
/// (22,100). The escrow's batches and balances stay in TaskEscrow, reached through the hooks below.
abstract contract BatchSettlement is ISettlement, EIP712, ReentrancyGuardTransient {
    bytes32 private constant SETTLED_WORD_TYPEHASH = keccak256("SettledWord(address worker,uint32 wordIndex,uint256 bits)");
    bytes32 private constant SETTLEMENT_TYPEHASH = keccak256(
        "Settlement(uint64 batchId,uint32 sequence,bytes32 root,uint256 cumulativeTotal,bytes manifestCid,"
        "SettledWord[] settled)SettledWord(address worker,uint32 wordIndex,uint256 bits)"
    );

    uint256 internal constant TASKS_PER_SETTLED_WORD = 192;
    uint256 private constant TASK_BITS = (1 << 192) - 1;
    uint256 private constant DIGEST_MASK = (1 << 192) - 1; // in a record: the settled words' digest
    uint256 private constant OPENED = DIGEST_MASK; // the digest of a worker whose words are stored
    uint256 private constant SETTLED_COUNT_SHIFT = 192; // in a record: answers settled, uint32
    uint256 private constant CLAIMED_COUNT_SHIFT = 224; // in a record: answers claimed, uint32
    uint256 private constant COUNT_MASK = type(uint32).max;

    /// _settledState: the worker's words in the batch are sealed, or opened.
    uint256 internal constant SETTLED_SEALED = 1;
    uint256 internal constant SETTLED_OPENED = 2;

    /// The batch's terms a settlement reads (full-width, in memory).
    struct SettleTerms {
        address requester;
        address token;
        uint256 taskCount;
        uint256 reward;
        uint256 relayFee;
        uint256 funds;
        bool answeredDirectly; // some answer was accepted by submitAnswers: look for conflicts
        uint32 sequence; // of the batch's latest settlement, 0 before the first
        uint256 settledAnswers; // answers paid by the batch's settlements so far
    }

    /// The batch's view of one settlement being posted (full-width fields, in memory).
    struct SettleRun {
        uint256 batchId;
        uint256 taskCount;
        address worker; // of the current run of entries
        uint256 recordSlot; // the worker's record: counts and digest
        uint256 record;
        uint256 priorDigest; // of the run's `before` words, to match the record's
        uint256 digest; // of the run's `before | bits` words, stored in the record
        uint256 runAnswers; // settled in this call for the current worker
        bool opened; // the worker's words are stored (openSettled): settle against them, not `before`
        uint256 answers; // settled in this call
        uint256 previousKey; // (worker, wordIndex) of the previous entry, for the sort check
        bool answeredDirectly; // the batch has direct answers: look for conflicts
    }

    mapping(uint64 batchId => bytes32) private _roots;
    /// key: batchId << 160 | worker (see _recordKey)
    mapping(uint256 key => uint256) private _records;
    /// Opened settled words. key: batchId << 192 | wordIndex << 160 | worker (see _settledKey)
    mapping(uint256 key => uint256) private _settledWords;

    // ---------------------------------------------------------------- hooks into the escrow

    /// The batch's terms a settlement needs; requester address(0) for an unknown batch.
    function _settlementTerms(uint64 batchId) internal view virtual returns (SettleTerms memory);
    /// The batch's token and reward per answer (what a claim needs).
    function _claimTerms(uint64 batchId) internal view virtual returns (address token, uint256 reward);
    /// Takes `spent` out of the batch's funds (checked by the caller), records the settlement's
    /// sequence and the batch's settled answers, and marks the batch settled, so that submitAnswers
    /// looks its workers' records up from now on (_settledState).
    function _recordSettlement(uint64 batchId, uint256 spent, uint32 sequence, uint256 settledAnswers)
        internal
        virtual;
    function _creditAccount(address token, address account, uint256 amount) internal virtual;
    /// The first task among `bits` (task firstTask + b for bit b) with an answer of `worker` that is
    /// pending or paid on the direct path, or type(uint256).max if none.
    function _firstDirectAnswer(uint256 batchId, address worker, uint256 firstTask, uint256 bits)
        internal
        view
        virtual
        returns (uint256);

    // ---------------------------------------------------------------- settle

    function settle(Settlement calldata settlement, uint256[] calldata before, bytes calldata signature)
        external
        nonReentrant
    {
        uint64 batchId = settlement.batchId;
        SettleTerms memory terms = _batchTerms(batchId);
        _checkHeader(settlement, terms);
        if (before.length != settlement.settled.length) revert SettlementPriorMismatch(batchId, address(0));
        (uint256 answers, bytes32 settledHash) = _settleWords(terms, batchId, settlement.settled, before);
        address signer = _recover(_hashTypedDataV4(_settlementStructHash(settlement, settledHash)), signature);
        if (signer != terms.requester) revert SettlementInvalidSigner(batchId, terms.requester, signer);
        _book(settlement, terms, answers);
    }

    function _batchTerms(uint64 batchId) private view returns (SettleTerms memory terms) {
        terms = _settlementTerms(batchId);
        if (terms.requester == address(0)) revert SettlementUnknownBatch(batchId);
    }

    /// Sequence and root.
    function _checkHeader(Settlement calldata settlement, SettleTerms memory terms) private pure {
        uint64 batchId = settlement.batchId;
        if (settlement.sequence <= terms.sequence) {
            revert SettlementStaleSequence(batchId, settlement.sequence, terms.sequence);
        }
        if (settlement.root == 0) revert SettlementEmptyRoot(batchId);
    }

    /// Checks the signed total against the answers settled, moves rewards to the claimable pool and
    /// relay fees to the poster, records the new root.
    function _book(Settlement calldata settlement, SettleTerms memory terms, uint256 answers) private {
        uint64 batchId = settlement.batchId;
        uint256 amount = answers * terms.reward;
        uint256 settledAnswers = terms.settledAnswers + answers;
        uint256 expected = settledAnswers * terms.reward;
        if (settlement.cumulativeTotal != expected) {
            revert SettlementWrongTotal(batchId, expected, settlement.cumulativeTotal);
        }
        uint256 fees = answers * terms.relayFee;
        if (amount + fees > terms.funds) revert SettlementInsufficientFunds(batchId, amount + fees, terms.funds);

        _roots[batchId] = settlement.root;
        _recordSettlement(batchId, amount + fees, settlement.sequence, settledAnswers);
        if (fees != 0) _creditAccount(terms.token, msg.sender, fees);
        _emitPosted(settlement, expected, amount, fees, answers);
    }

    function _emitPosted(Settlement calldata settlement, uint256 total, uint256 amount, uint256 fees, uint256 answers)
        private
    {
        emit AnswersSettled(settlement.batchId, settlement.sequence, settlement.settled);
        emit SettlementPosted(
            settlement.batchId, settlement.sequence, msg.sender, settlement.root, total, amount, fees,
            uint32(answers), settlement.manifestCid
        );
    }

    /// Checks every entry against the worker's earlier words, counts its answers and digests its
    /// words per worker; returns how many answers and the EIP-712 hash of the entries (hashed
    /// here, in the same pass over the calldata).
    function _settleWords(
        SettleTerms memory terms,
        uint64 batchId,
        SettledWord[] calldata settled,
        uint256[] calldata before
    ) private returns (uint256, bytes32) {
        SettleRun memory run;
        run.batchId = batchId;
        run.taskCount = terms.taskCount;
        run.answeredDirectly = terms.answeredDirectly;
        uint256 count = settled.length;
        bytes32[] memory entryHashes = new bytes32[](count);
        for (uint256 i; i < count;) {
            (address worker, uint256 wordIndex, uint256 bits) = _entryAt(settled, i);
            entryHashes[i] = _entryHash(worker, wordIndex, bits);
            _checkEntry(run, i, worker, wordIndex, bits);
            if (worker != run.worker) _openWorker(run, worker);
            _settleEntry(run, worker, wordIndex, bits, _wordAt(before, i));
            unchecked {
                ++i;
            }
        }
        _closeWorker(run);
        return (run.answers, _hashEntries(entryHashes));
    }

    /// Order, worker, task range, and no answer already pending or paid on the direct path.
    function _checkEntry(SettleRun memory run, uint256 i, address worker, uint256 wordIndex, uint256 bits)
        private
        view
    {
        uint64 batchId = uint64(run.batchId);
        if (worker == address(0)) revert SettlementInvalidWorker(batchId, i);
        uint256 key = (uint256(uint160(worker)) << 32) | wordIndex;
        if (key <= run.previousKey) revert SettlementUnsorted(batchId, i);
        run.previousKey = key;
        uint256 firstTask = wordIndex * TASKS_PER_SETTLED_WORD; // wordIndex < 2^32: no overflow
        if (bits > TASK_BITS || firstTask >= run.taskCount || bits >> (run.taskCount - firstTask) != 0) {
            revert SettlementTaskOutOfRange(batchId, worker, uint32(wordIndex));
        }
        if (run.answeredDirectly) {
            uint256 direct = _firstDirectAnswer(batchId, worker, firstTask, bits);
            if (direct != type(uint256).max) revert SettlementAnsweredDirectly(batchId, worker, uint32(direct));
        }
    }

    function _openWorker(SettleRun memory run, address worker) private {
        _closeWorker(run);
        run.worker = worker;
        run.recordSlot = _recordSlot(run.batchId, worker);
        run.record = _load(run.recordSlot);
        bool opened = run.record & DIGEST_MASK == OPENED;
        run.opened = opened;
        // An opened worker's record keeps OPENED: its words are checked and written in storage.
        run.priorDigest = opened ? OPENED : 0;
        run.digest = run.priorDigest;
        run.runAnswers = 0;
    }

    /// Checks the worker's `before` words against its record, then writes the record once:
    /// settled count + this call's answers, digest of all its words (OPENED stays OPENED).
    function _closeWorker(SettleRun memory run) private {
        if (run.worker == address(0)) return;
        uint256 record = run.record;
        if (run.priorDigest != record & DIGEST_MASK) revert SettlementPriorMismatch(uint64(run.batchId), run.worker);
        unchecked {
            // settled <= taskCount < 2^32: distinct tasks, each settled at most once.
            _store(
                run.recordSlot,
                ((record & ~DIGEST_MASK) + (run.runAnswers << SETTLED_COUNT_SHIFT)) | run.digest
            );
            run.answers += run.runAnswers;
        }
    }

    /// `prior`: the worker's earlier bits in the word as `before` states them, or as stored once
    /// its words are opened (then `before` is ignored, so an openSettled landing between a
    /// settlement's signing and its posting does not make it revert).
    function _settleEntry(SettleRun memory run, address worker, uint256 wordIndex, uint256 bits, uint256 prior)
        private
    {
        uint256 slot;
        if (run.opened) {
            slot = _slotOf(_settledWordsSlot(), _settledKey(run.batchId, worker, wordIndex));
            prior = _load(slot);
        }
        uint256 overlap = prior & bits;
        if (overlap != 0) {
            revert SettlementAlreadySettled(
                uint64(run.batchId), worker, uint32(wordIndex * TASKS_PER_SETTLED_WORD + _lowestBit(overlap))
            );
        }
        uint256 word = prior | bits;
        if (word == 0) revert SettlementEmptyWord(uint64(run.batchId), worker, uint32(wordIndex));
        if (run.opened) {
            if (bits != 0) _store(slot, word);
        } else {
            if (prior != 0) run.priorDigest = _chain(run.priorDigest, wordIndex, prior);
            run.digest = _chain(run.digest, wordIndex, word);
        }
        unchecked {
            run.runAnswers += _popcount(bits);
        }
    }

    // ---------------------------------------------------------------- open

    function openSettled(uint64 batchId, address worker, uint256[] calldata words) external {
        uint256 slot = _recordSlot(batchId, worker);
        uint256 record = _load(slot);
        uint256 digest;
        for (uint256 j; j < words.length;) {
            uint256 word = _wordAt(words, j);
            if (word != 0) {
                digest = _chain(digest, j, word);
                _settledWords[_settledKey(batchId, worker, j)] = word;
            }
            unchecked {
                ++j;
            }
        }
        // Nothing settled (digest 0) or already opened never matches a chain of nonzero words.
        if (digest == 0 || digest != record & DIGEST_MASK) revert SettlementPriorMismatch(batchId, worker);
        _store(slot, record | OPENED);
        emit SettledWordsOpened(batchId, worker);
    }

    // ---------------------------------------------------------------- claims

    // Claims make no external call and only move value inside the escrow (from a batch's pool to a
    // worker's balance, checked against the worker's settled answers): no reentrancy guard needed.

    function claimEarnings(uint64 batchId, address worker, uint256 cumulative, bytes32[] calldata proof)
        external
        returns (uint256)
    {
        return _claim(batchId, worker, cumulative, proof);
    }

    function claimMany(EarningsClaim[] calldata claims) external returns (uint256 total) {
        for (uint256 i; i < claims.length;) {
            EarningsClaim calldata c = claims[i];
            total += _claim(c.batchId, c.worker, c.cumulative, c.proof);
            unchecked {
                ++i;
            }
        }
    }

    function _claim(uint64 batchId, address worker, uint256 cumulative, bytes32[] calldata proof)
        private
        returns (uint256 amount)
    {
        bytes32 root = _roots[batchId];
        if (root == 0) revert SettlementNoRoot(batchId);
        if (!MerkleProof.verifyCalldata(proof, root, _earningsLeaf(worker, cumulative))) revert SettlementInvalidProof(batchId, worker, cumulative);
        (address token, uint256 reward) = _claimTerms(batchId);
        if (cumulative % reward != 0) revert SettlementUnevenAmount(batchId, cumulative, reward);
        amount = _markClaimed(batchId, worker, cumulative, reward);
        _creditAccount(token, worker, amount);
        emit EarningsClaimed(batchId, worker, amount, cumulative);
    }

    /// Raises the worker's claimed count to cumulative / reward, within its settled count; returns
    /// the amount newly claimed.
    function _markClaimed(uint64 batchId, address worker, uint256 cumulative, uint256 reward)
        private
        returns (uint256)
    {
        uint256 slot = _recordSlot(batchId, worker);
        uint256 record = _load(slot);
        uint256 settledCount = (record >> SETTLED_COUNT_SHIFT) & COUNT_MASK;
        uint256 claimedCount = record >> CLAIMED_COUNT_SHIFT;
        uint256 count = cumulative / reward;
        if (count > settledCount) {
            revert SettlementClaimExceedsSettled(batchId, worker, cumulative, settledCount * reward);
        }
        if (count <= claimedCount) revert SettlementNothingToClaim(batchId, worker, cumulative, claimedCount * reward);
        // count <= settledCount < 2^32 fits the claimed field.
        _store(slot, (record & ~(COUNT_MASK << CLAIMED_COUNT_SHIFT)) | (count << CLAIMED_COUNT_SHIFT));
        return (count - claimedCount) * reward;
    }

    // ---------------------------------------------------------------- views

    function settlementOf(uint64 batchId)
        external
        view
        returns (uint32 sequence, bytes32 root, uint256 cumulativeTotal)
    {
        SettleTerms memory terms = _settlementTerms(batchId);
        return (terms.sequence, _roots[batchId], terms.settledAnswers * terms.reward);
    }

    function earningsOf(uint64 batchId, address worker) external view returns (uint256 settled, uint256 claimed) {
        uint256 record = _records[_recordKey(batchId, worker)];
        (, uint256 reward) = _claimTerms(batchId);
        settled = ((record >> SETTLED_COUNT_SHIFT) & COUNT_MASK) * reward;
        claimed = (record >> CLAIMED_COUNT_SHIFT) * reward;
    }

    /// keccak256 of the entries' struct hashes, concatenated (EIP-712 encoding of an array).
    function _hashEntries(bytes32[] memory entryHashes) private pure returns (bytes32 hash) {
        assembly ("memory-safe") {
            hash := keccak256(add(entryHashes, 0x20), shl(5, mload(entryHashes)))
        }
    }

    // ---------------------------------------------------------------- internals for the escrow

    /// 0 if the worker has no settled answers in the batch or the task is not among its opened
    /// settled words; SETTLED_SEALED if its words are sealed (which tasks is unknown here);
    /// SETTLED_OPENED if the task is among its opened words.
    function _settledState(uint256 batchId, address worker, uint256 taskIndex) internal view returns (uint256) {
        uint256 digest = _records[_recordKey(batchId, worker)] & DIGEST_MASK;
        if (digest == 0) return 0;
        if (digest != OPENED) return SETTLED_SEALED;
        unchecked {
            uint256 word = _settledWords[_settledKey(batchId, worker, taskIndex / TASKS_PER_SETTLED_WORD)];
            return (word >> (taskIndex % TASKS_PER_SETTLED_WORD)) & 1 != 0 ? SETTLED_OPENED : 0;
        }
    }

    /// Signer of a 65-byte (r, s, v) or 64-byte EIP-2098 (r, vs) signature; address(0) if invalid
    /// (any other length, high s, v not 27/28, no recoverable key).
    function _recover(bytes32 digest, bytes calldata signature) internal pure returns (address signer) {
        if (signature.length == 65) {
            (signer,,) = ECDSA.tryRecoverCalldata(digest, signature);
        } else if (signature.length == 64) {
            bytes32 r;
            bytes32 vs;
            assembly ("memory-safe") {
                r := calldataload(signature.offset)
                vs := calldataload(add(signature.offset, 0x20))
            }
            (signer,,) = ECDSA.tryRecover(digest, r, vs);
        }
    }

    // ---------------------------------------------------------------- internals: encoding

    /// The StandardMerkleTree leaf of (worker, cumulative): keccak256(bytes.concat(keccak256(
    /// abi.encode(worker, cumulative)))), hashed in scratch space.
    function _earningsLeaf(address worker, uint256 cumulative) private pure returns (bytes32 leaf) {
        assembly ("memory-safe") {
            mstore(0x00, worker)
            mstore(0x20, cumulative)
            mstore(0x00, keccak256(0x00, 0x40))
            leaf := keccak256(0x00, 0x20)
        }
    }

    function _settlementStructHash(Settlement calldata settlement, bytes32 settledHash) private pure returns (bytes32) {
        return keccak256(
            abi.encode(
                SETTLEMENT_TYPEHASH,
                settlement.batchId,
                settlement.sequence,
                settlement.root,
                settlement.cumulativeTotal,
                keccak256(settlement.manifestCid),
                settledHash
            )
        );
    }

    function _entryHash(address worker, uint256 wordIndex, uint256 bits) private pure returns (bytes32 hash) {
        bytes32 typeHash = SETTLED_WORD_TYPEHASH;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typeHash)
            mstore(add(m, 0x20), worker)
            mstore(add(m, 0x40), wordIndex)
            mstore(add(m, 0x60), bits)
            hash := keccak256(m, 0x80)
        }
    }

    /// settled[i] of a static 3-word struct array (bounds checked on entry, fields here).
    function _entryAt(SettledWord[] calldata settled, uint256 i)
        private
        pure
        returns (address, uint256 wordIndex, uint256 bits)
    {
        uint256 rawWorker;
        assembly ("memory-safe") {
            let p := add(settled.offset, mul(i, 0x60))
            rawWorker := calldataload(p)
            wordIndex := calldataload(add(p, 0x20))
            bits := calldataload(add(p, 0x40))
        }
        if ((rawWorker >> 160) | (wordIndex >> 32) != 0) revert();
        return (address(uint160(rawWorker)), wordIndex, bits);
    }

    function _settledKey(uint256 batchId, address worker, uint256 wordIndex) private pure returns (uint256) {
        unchecked {
            return (batchId << 192) | (wordIndex << 160) | uint160(worker);
        }
    }

    /// words[i] for i < words.length (the ABI decoder checked the array lies in calldata). Read
    /// directly: Solidity's indexed access would be one more helper shared with MerkleProof's
    /// loop, which the optimizer then stops inlining there (+180 gas per claim).
    function _wordAt(uint256[] calldata words, uint256 i) private pure returns (uint256 word) {
        assembly ("memory-safe") {
            word := calldataload(add(words.offset, shl(5, i)))
        }
    }

    function _recordKey(uint256 batchId, address worker) private pure returns (uint256) {
        unchecked {
            return (batchId << 160) | uint160(worker);
        }
    }

    function _settledWordsSlot() private pure returns (uint256 slot) {
        assembly ("memory-safe") {
            slot := _settledWords.slot
        }
    }

    /// Storage slot of _records[_recordKey(batchId, worker)].
    function _recordSlot(uint256 batchId, address worker) private pure returns (uint256 slot) {
        uint256 key = _recordKey(batchId, worker);
        assembly ("memory-safe") {
            mstore(0x00, key)
            mstore(0x20, _records.slot)
            slot := keccak256(0x00, 0x40)
        }
    }

    /// One link of a worker's settled-words digest: uint192(keccak256(abi.encode(digest, wordIndex, word))).
    function _chain(uint256 digest, uint256 wordIndex, uint256 word) private pure returns (uint256) {
        bytes32 hash;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, digest)
            mstore(add(m, 0x20), wordIndex)
            mstore(add(m, 0x40), word)
            hash := keccak256(m, 0x60)
        }
        return uint256(hash) & DIGEST_MASK;
    }

    // ---------------------------------------------------------------- internals: storage words
    // (shared with TaskEscrow: a mapping entry's slot hashed once for its read and its write)

    /// Storage slot of `map[key]` for a mapping(uint256 => uint256) at `mapSlot` (Solidity's rule).
    function _slotOf(uint256 mapSlot, uint256 key) internal pure returns (uint256 slot) {
        assembly ("memory-safe") {
            mstore(0x00, key)
            mstore(0x20, mapSlot)
            slot := keccak256(0x00, 0x40)
        }
    }

    function _load(uint256 slot) internal view returns (uint256 value) {
        assembly ("memory-safe") {
            value := sload(slot)
        }
    }

    function _store(uint256 slot, uint256 value) internal {
        assembly ("memory-safe") {
            sstore(slot, value)
        }
    }

    /// Set bits of x (SWAR popcount over the whole word: per-byte counts, then their sum in the
    /// top byte by one multiplication, which holds while the count is below 256; x < 2^192 here).
    function _popcount(uint256 x) internal pure returns (uint256) {
        unchecked {
            uint256 m1 = 0x5555555555555555555555555555555555555555555555555555555555555555;
            uint256 m2 = 0x3333333333333333333333333333333333333333333333333333333333333333;
            uint256 m4 = 0x0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f;
            uint256 h01 = 0x0101010101010101010101010101010101010101010101010101010101010101;
            x -= (x >> 1) & m1;
            x = (x & m2) + ((x >> 2) & m2);
            x = (x + (x >> 4)) & m4;
            return (x * h01) >> 248;
        }
    }

    function _lowestBit(uint256 x) internal pure returns (uint256 index) {
        while (x & 1 == 0) {
            x >>= 1;
            ++index;
        }
    }
}
