// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Forces ETH into a contract that has no payable entry point for it.
/// @dev Under cancun (EIP-6780) SELFDESTRUCT still transfers the balance, and only deletes the
/// account when it runs in the transaction that created it, as here in the constructor.
contract ForceSend {
    constructor(address payable target) payable {
        selfdestruct(target);
    }
}
