// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title Test token that burns a fee on every transfer between accounts (not on mint/burn):
/// the escrow must notice it received less than it pulled and refuse the token.
/// @dev The fee can be switched on after the token was accepted, to test extend/bonus.
contract FeeOnTransferToken is ERC20 {
    uint16 public feeBps; // fee in basis points of each transfer, burned from the amount sent

    event FeeChanged(uint16 feeBps);

    constructor(uint16 feeBps_) ERC20("Fee On Transfer", "FOT") {
        feeBps = feeBps_;
        emit FeeChanged(feeBps_);
    }

    function setFee(uint16 feeBps_) external {
        feeBps = feeBps_;
        emit FeeChanged(feeBps_);
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        if (from == address(0) || to == address(0) || feeBps == 0) {
            super._update(from, to, value);
            return;
        }
        uint256 fee = (value * feeBps) / 10_000;
        if (fee == 0 && value > 0) fee = 1; // even dust transfers lose a unit
        super._update(from, address(0), fee);
        super._update(from, to, value - fee);
    }
}
