// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title A contract account (requester, relay, bonus recipient) whose receive() calls back
/// into a target once, with calldata the test chose: re-entering withdraw/reclaim while the
/// escrow is paying it.
/// @dev mode Catch records the re-entrant call's outcome and lets the payment finish, so a
/// test can check the call had no effect; mode Bubble reverts with the re-entrant call's error.
contract ReentrantReceiver {
    enum Mode {
        Off,
        Catch,
        Bubble
    }

    Mode public mode;
    address public hookTarget;
    bytes public hookData;
    uint256 public reentries; // re-entrant calls attempted
    bool public lastSuccess;
    bytes public lastReturnData;
    uint256 public received; // ETH received through receive()

    event Reentered(address indexed target, bool success, bytes returnData);

    /// Arms a one-shot re-entrant call, made on the next ETH receipt.
    function arm(address target, bytes calldata data, Mode mode_) external {
        hookTarget = target;
        hookData = data;
        mode = mode_;
    }

    /// Acts as this account: the test drives the escrow through it.
    function execute(address target, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = target.call{value: msg.value}(data);
        if (!ok) _bubble(ret);
        return ret;
    }

    receive() external payable {
        received += msg.value;
        Mode m = mode;
        if (m == Mode.Off) return;
        mode = Mode.Off; // one shot: no unbounded recursion
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
