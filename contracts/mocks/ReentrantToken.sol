// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title ERC-20 whose transfer/transferFrom calls back into a target (the escrow) once, in
/// the middle of moving balances: re-entering withdraw, reclaim, submitAnswers, createBatch...
/// @dev The token contract is also an account (execute) so it can be the requester, relay or
/// worker whose payment it intercepts. Hooks fire on transfers only, never on mint or burn.
contract ReentrantToken is ERC20 {
    enum Mode {
        Off,
        Catch,
        Bubble
    }

    Mode public mode;
    address public hookTarget;
    bytes public hookData;
    address public hookOnlyFrom; // if nonzero, fire only for transfers out of this account
    address public hookOnlyTo; // if nonzero, fire only for transfers into this account
    uint256 public reentries;
    bool public lastSuccess;
    bytes public lastReturnData;

    event Reentered(address indexed target, bool success, bytes returnData);

    constructor() ERC20("Reentrant", "REENT") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// Arms a one-shot re-entrant call on the next transfer matching from/to (0 = any).
    function arm(address target, bytes calldata data, Mode mode_, address onlyFrom, address onlyTo) external {
        hookTarget = target;
        hookData = data;
        mode = mode_;
        hookOnlyFrom = onlyFrom;
        hookOnlyTo = onlyTo;
    }

    /// Acts as this account (the token contract itself holds an escrow balance in tests).
    function execute(address target, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = target.call{value: msg.value}(data);
        if (!ok) _bubble(ret);
        return ret;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        Mode m = mode;
        if (m == Mode.Off || from == address(0) || to == address(0)) return;
        if (hookOnlyFrom != address(0) && from != hookOnlyFrom) return;
        if (hookOnlyTo != address(0) && to != hookOnlyTo) return;
        mode = Mode.Off;
        reentries += 1;
        (bool ok, bytes memory ret) = hookTarget.call(hookData);
        lastSuccess = ok;
        lastReturnData = ret;
        emit Reentered(hookTarget, ok, ret);
        if (!ok && m == Mode.Bubble) _bubble(ret);
    }

    function _bubble(bytes memory ret) private pure {
        assembly {
            revert(add(ret, 32), mload(ret))
        }
    }
}
