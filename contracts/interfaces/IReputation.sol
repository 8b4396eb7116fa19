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
    /// `counts[i]` answers of `workers[i]`, reviewed by `requester`, ended with `outcome`: one
    /// event per review call (the escrow's AnswersApproved / AnswersRejected / AnswersReleased
    /// name each worker's answers, indexed by worker).
    event OutcomesRecorded(address indexed requester, Outcome indexed outcome, address[] workers, uint64[] counts);

    error ReputationUnauthorizedEscrow(address caller);
    error ReputationZeroAddress();
    error ReputationLengthMismatch(uint256 workers, uint256 counts);

    /// Owner authorizes or revokes an escrow that may record outcomes.
    function setEscrow(address escrow, bool authorized) external;
    /// Authorized escrows record one review call's outcomes with one requester: `counts[i]`
    /// answers of `workers[i]` (one call and one OutcomesRecorded per review, not per worker).
    function record(address requester, Outcome outcome, address[] calldata workers, uint64[] calldata counts)
        external;

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
