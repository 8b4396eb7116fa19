// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ITaskEscrow} from "../interfaces/ITaskEscrow.sol";

/// @title TEST ONLY: an escrow built to be wrong, so the auditor's tests can prove it notices.
/// @notice Same function signatures and events as ITaskEscrow for the subset the auditor tests
/// drive (ETH batches only), with one deliberate fault chosen at construction:
///   SkipSignatureCheck — accepts answers whatever their signature (auditor check 3);
///   PayTwice           — lets the requester approve an already paid answer again (check 2);
///   UnderRefund        — reclaim refunds half the unallocated funds and keeps the rest (check 1).
/// Never deploy it anywhere its balances would mean money.
contract FaultyEscrow is EIP712("Kempelen", "1") {
    enum Fault {
        None,
        SkipSignatureCheck,
        PayTwice,
        UnderRefund
    }

    bytes32 private constant ANSWER_TYPEHASH =
        keccak256("Answer(uint64 batchId,uint32 taskIndex,bytes32 answerDigest,address worker)");
    uint8 private constant PENDING = 1;
    uint8 private constant PAID = 2;
    uint8 private constant REJECTED = 3;

    Fault public immutable fault;
    uint64 private _batchCount;
    mapping(uint64 batchId => ITaskEscrow.Batch) private _batches;
    mapping(bytes32 answerKey => uint8) private _status;
    mapping(bytes32 answerKey => uint256) private _submittedAt;
    mapping(address token => mapping(address account => uint256)) private _balances;

    error FaultyOnlyEth();
    error FaultyNotRequester();
    error FaultyNotPending(uint64 batchId, address worker, uint32 taskIndex);
    error FaultyWindow(uint64 batchId, address worker, uint32 taskIndex);
    error FaultyTooEarly(uint64 batchId);

    constructor(Fault fault_) {
        fault = fault_;
    }

    function createBatch(ITaskEscrow.BatchTerms calldata terms) external payable returns (uint64 batchId) {
        if (terms.token != address(0)) revert FaultyOnlyEth();
        uint256 deposit = uint256(terms.taskCount) * terms.answersPerTask * (uint256(terms.reward) + terms.relayFee);
        if (msg.value != deposit) revert ITaskEscrow.EscrowWrongDeposit(deposit, msg.value);
        batchId = ++_batchCount;
        ITaskEscrow.Batch storage b = _batches[batchId];
        b.requester = msg.sender;
        b.deadline = terms.deadline;
        b.reviewWindow = terms.reviewWindow;
        b.answersPerTask = terms.answersPerTask;
        b.taskCount = terms.taskCount;
        b.reward = terms.reward;
        b.relayFee = terms.relayFee;
        b.funds = uint128(deposit);
        _emitCreated(batchId, terms, deposit);
    }

    function _emitCreated(uint64 batchId, ITaskEscrow.BatchTerms calldata terms, uint256 deposit) private {
        emit ITaskEscrow.BatchCreated(
            batchId,
            msg.sender,
            address(0),
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

    function submitAnswers(ITaskEscrow.Answer[] calldata answers, bytes[] calldata signatures)
        external
        returns (uint256 accepted)
    {
        for (uint256 i; i < answers.length; ++i) {
            ITaskEscrow.Answer calldata a = answers[i];
            ITaskEscrow.Batch storage b = _batches[a.batchId];
            bytes32 key = _key(a.batchId, a.worker, a.taskIndex);
            (address signer,,) = ECDSA.tryRecover(_answerDigest(a), signatures[i]);
            bool signed = signer == a.worker && signer != address(0);
            if (!signed && fault != Fault.SkipSignatureCheck) {
                emit ITaskEscrow.AnswerSkipped(a.batchId, a.worker, a.taskIndex, ITaskEscrow.SkipReason.BadSignature);
                continue;
            }
            if (_status[key] != 0) {
                emit ITaskEscrow.AnswerSkipped(a.batchId, a.worker, a.taskIndex, ITaskEscrow.SkipReason.AlreadyAnswered);
                continue;
            }
            _status[key] = PENDING;
            _submittedAt[key] = block.timestamp;
            b.funds -= b.reward + b.relayFee;
            b.pending += 1;
            _balances[address(0)][msg.sender] += b.relayFee;
            accepted += 1;
            bytes32[] memory digests = new bytes32[](1);
            digests[0] = a.answerDigest;
            emit ITaskEscrow.AnswersSubmitted(
                a.batchId, a.worker, msg.sender, a.taskIndex - a.taskIndex % 96, 1 << (a.taskIndex % 96), digests
            );
        }
    }

    function approve(uint64 batchId, ITaskEscrow.TaskSet[] calldata sets) external {
        ITaskEscrow.Batch storage b = _batches[batchId];
        if (msg.sender != b.requester) revert FaultyNotRequester();
        uint32[] memory tasks = _tasksOf(sets);
        for (uint256 i; i < tasks.length; i += 2) {
            (address worker, uint32 task) = (sets[tasks[i]].worker, tasks[i + 1]);
            bytes32 key = _key(batchId, worker, task);
            bool again = fault == Fault.PayTwice && _status[key] == PAID;
            if (_status[key] != PENDING && !again) revert FaultyNotPending(batchId, worker, task);
            if (block.timestamp > _submittedAt[key] + b.reviewWindow) revert FaultyWindow(batchId, worker, task);
            if (again) {
                b.funds -= b.reward; // the second payment is taken from other answers' money
            } else {
                b.pending -= 1;
            }
            _status[key] = PAID;
            _balances[address(0)][worker] += b.reward;
            emit ITaskEscrow.AnswersApproved(batchId, worker, task - task % 96, uint256(1) << (task % 96));
        }
    }

    function reject(uint64 batchId, ITaskEscrow.TaskSet[] calldata sets, bytes calldata reasonCid) external {
        ITaskEscrow.Batch storage b = _batches[batchId];
        if (msg.sender != b.requester) revert FaultyNotRequester();
        uint32[] memory tasks = _tasksOf(sets);
        for (uint256 i; i < tasks.length; i += 2) {
            (address worker, uint32 task) = (sets[tasks[i]].worker, tasks[i + 1]);
            bytes32 key = _key(batchId, worker, task);
            if (_status[key] != PENDING) revert FaultyNotPending(batchId, worker, task);
            _status[key] = REJECTED;
            b.pending -= 1;
            b.funds += b.reward;
            emit ITaskEscrow.AnswersRejected(batchId, worker, task - task % 96, uint256(1) << (task % 96), reasonCid);
        }
    }

    function release(uint64 batchId, ITaskEscrow.TaskSet[] calldata sets) external {
        ITaskEscrow.Batch storage b = _batches[batchId];
        uint32[] memory tasks = _tasksOf(sets);
        for (uint256 i; i < tasks.length; i += 2) {
            (address worker, uint32 task) = (sets[tasks[i]].worker, tasks[i + 1]);
            bytes32 key = _key(batchId, worker, task);
            if (_status[key] != PENDING) revert FaultyNotPending(batchId, worker, task);
            if (block.timestamp <= _submittedAt[key] + b.reviewWindow) revert FaultyWindow(batchId, worker, task);
            _status[key] = PAID;
            b.pending -= 1;
            _balances[address(0)][worker] += b.reward;
            emit ITaskEscrow.AnswersReleased(batchId, worker, task - task % 96, uint256(1) << (task % 96));
        }
    }

    /// (set index, task index) pairs, flattened, of every task the sets name, in order.
    function _tasksOf(ITaskEscrow.TaskSet[] calldata sets) private pure returns (uint32[] memory pairs) {
        uint256 n;
        for (uint256 i; i < sets.length; ++i) {
            for (uint256 bit; bit < 96; ++bit) {
                if ((sets[i].tasks >> bit) & 1 != 0) ++n;
            }
        }
        pairs = new uint32[](2 * n);
        n = 0;
        for (uint256 i; i < sets.length; ++i) {
            for (uint256 bit; bit < 96; ++bit) {
                if ((sets[i].tasks >> bit) & 1 == 0) continue;
                pairs[n++] = uint32(i);
                pairs[n++] = uint32(sets[i].firstTask + bit);
            }
        }
    }

    function reclaim(uint64 batchId) external returns (uint256 amount) {
        ITaskEscrow.Batch storage b = _batches[batchId];
        if (msg.sender != b.requester) revert FaultyNotRequester();
        if (block.timestamp <= b.deadline || b.pending != 0) revert FaultyTooEarly(batchId);
        uint256 funds = b.funds;
        amount = fault == Fault.UnderRefund ? funds / 2 : funds;
        b.funds = 0;
        Address.sendValue(payable(msg.sender), amount);
        emit ITaskEscrow.BatchReclaimed(batchId, msg.sender, amount);
    }

    function withdraw(address token) external returns (uint256 amount) {
        amount = _balances[token][msg.sender];
        _balances[token][msg.sender] = 0;
        Address.sendValue(payable(msg.sender), amount);
        emit ITaskEscrow.Withdrawn(msg.sender, token, amount);
    }

    function batch(uint64 batchId) external view returns (ITaskEscrow.Batch memory) {
        return _batches[batchId];
    }

    function balanceOf(address token, address account) external view returns (uint256) {
        return _balances[token][account];
    }

    function reputation() external pure returns (address) {
        return address(0);
    }

    function _answerDigest(ITaskEscrow.Answer calldata a) private view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(ANSWER_TYPEHASH, a.batchId, a.taskIndex, a.answerDigest, a.worker)));
    }

    function _key(uint64 batchId, address worker, uint32 taskIndex) private pure returns (bytes32) {
        return keccak256(abi.encode(batchId, worker, taskIndex));
    }
}
