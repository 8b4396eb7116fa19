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

    function record(address requester, Outcome outcome, address[] calldata workers, uint64[] calldata counts)
        external
    {
        if (!isEscrow[msg.sender]) revert ReputationUnauthorizedEscrow(msg.sender);
        uint256 n = workers.length;
        if (n != counts.length) revert ReputationLengthMismatch(n, counts.length);
        uint64 total;
        for (uint256 i; i < n;) {
            uint64 count = counts[i];
            _add(_workerRecords[workers[i]], outcome, count);
            total += count;
            unchecked {
                ++i;
            }
        }
        _add(_requesterRecords[requester], outcome, total);
        emit OutcomesRecorded(requester, outcome, workers, counts);
    }

    function workerRecord(address worker) external view returns (Record memory) {
        return _workerRecords[worker];
    }

    function requesterRecord(address requester) external view returns (Record memory) {
        return _requesterRecords[requester];
    }

    function _add(Record storage r, Outcome outcome, uint64 count) private {
        if (outcome == Outcome.Approved) {
            r.approved += count;
        } else if (outcome == Outcome.Rejected) {
            r.rejected += count;
        } else {
            r.released += count;
        }
    }

    function score(address worker) public view returns (uint64) {
        Record storage w = _workerRecords[worker];
        return w.approved + w.released;
    }

    function meets(address worker, uint32 minReputation) external view returns (bool) {
        return score(worker) >= minReputation;
    }
}
