// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IReputation} from "./interfaces/IReputation.sol";

/// @title On-chain review outcomes of workers and requesters, written only by authorized escrows.
contract Reputation is IReputation, Ownable2Step {
    mapping(address escrow => bool) public isEscrow;
    mapping(address worker => Record) private _workerRecords;
    mapping(address requester => Record) private _requesterRecords;

    constructor(address owner) Ownable(owner) {}

    function setEscrow(address escrow, bool authorized) external onlyOwner {
        if (escrow == address(0)) revert ReputationZeroAddress();
        isEscrow[escrow] = authorized;
        emit EscrowAuthorized(escrow, authorized);
    }

    function record(address worker, address requester, Outcome outcome, uint64 count) external {
        if (!isEscrow[msg.sender]) revert ReputationUnauthorizedEscrow(msg.sender);
        Record storage w = _workerRecords[worker];
        Record storage r = _requesterRecords[requester];
        if (outcome == Outcome.Approved) {
            w.approved += count;
            r.approved += count;
        } else if (outcome == Outcome.Rejected) {
            w.rejected += count;
            r.rejected += count;
        } else {
            w.released += count;
            r.released += count;
        }
        emit OutcomeRecorded(worker, requester, outcome, count);
    }

    function workerRecord(address worker) external view returns (Record memory) {
        return _workerRecords[worker];
    }

    function requesterRecord(address requester) external view returns (Record memory) {
        return _requesterRecords[requester];
    }

    function score(address worker) public view returns (uint64) {
        Record storage w = _workerRecords[worker];
        return w.approved + w.released;
    }

    function meets(address worker, uint32 minReputation) external view returns (bool) {
        return score(worker) >= minReputation;
    }
}
