// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Kempelen reputation: on-chain review outcomes of workers and of requesters.
/// @notice Only escrows the owner authorized may record outcomes, so every counter is
/// backed by an escrow event (AnswersApproved / AnswersRejected / AnswersReleased).
/// Workers judge requesters by the same counters (rejection rate, share auto-released).
interface IReputation {
    enum Outcome {
        Approved,
        Rejected,
        Released
    }

    struct Record {
        uint64 approved;
        uint64 rejected;
        uint64 released;
    }

    event EscrowAuthorized(address indexed escrow, bool authorized);
    /// `count` answers of `worker`, reviewed by `requester`, ended with `outcome`.
    event OutcomeRecorded(address indexed worker, address indexed requester, Outcome indexed outcome, uint64 count);

    error ReputationUnauthorizedEscrow(address caller);
    error ReputationZeroAddress();

    /// Owner authorizes or revokes an escrow that may record outcomes.
    function setEscrow(address escrow, bool authorized) external;
    /// Authorized escrows record `count` outcomes of one worker with one requester.
    function record(address worker, address requester, Outcome outcome, uint64 count) external;

    function isEscrow(address escrow) external view returns (bool);
    /// Outcomes of answers the worker gave.
    function workerRecord(address worker) external view returns (Record memory);
    /// Outcomes of answers the requester received.
    function requesterRecord(address requester) external view returns (Record memory);
    /// A worker's reputation: answers paid (approved + released).
    function score(address worker) external view returns (uint64);
    /// Whether the worker meets a batch's minimum reputation (score >= minReputation).
    function meets(address worker, uint32 minReputation) external view returns (bool);
}
