"""Transaction fees of the submitter: EIP-1559 or legacy per chain, and the bump that replaces a stuck one."""

from __future__ import annotations

from dataclasses import dataclass

# Geth and anvil refuse a same-nonce replacement unless every fee rises by at least 10%;
# 12.5% (9/8) is the usual safe margin and what the brief asks for.
BUMP_NUMERATOR, BUMP_DENOMINATOR = 9, 8


def _bump(value: int) -> int:
    return -(-value * BUMP_NUMERATOR // BUMP_DENOMINATOR) + 1  # ceil, +1 wei against rounding ties


@dataclass(frozen=True)
class Fees:
    """Either EIP-1559 (max fee, priority fee) or legacy (gas price) fees of one transaction."""

    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    gas_price: int | None = None

    @property
    def eip1559(self) -> bool:
        return self.max_fee_per_gas is not None

    @property
    def price_cap(self) -> int:
        """The most this transaction may pay per gas."""
        return self.max_fee_per_gas if self.eip1559 else self.gas_price

    def bumped(self, at_least: Fees | None = None) -> Fees:
        """Fees for a same-nonce replacement: +12.5% each, and never below today's suggestion."""
        if self.eip1559:
            priority = _bump(self.max_priority_fee_per_gas)
            cap = _bump(self.max_fee_per_gas)
            if at_least is not None and at_least.eip1559:
                priority = max(priority, at_least.max_priority_fee_per_gas)
                cap = max(cap, at_least.max_fee_per_gas)
            return Fees(max_fee_per_gas=max(cap, priority), max_priority_fee_per_gas=priority)
        price = _bump(self.gas_price)
        if at_least is not None and not at_least.eip1559:
            price = max(price, at_least.gas_price)
        return Fees(gas_price=price)

    def tx_fields(self) -> dict:
        if self.eip1559:
            return {"type": 2, "maxFeePerGas": self.max_fee_per_gas,
                    "maxPriorityFeePerGas": self.max_priority_fee_per_gas}
        return {"gasPrice": self.gas_price}


def suggest_fees(base_fee: int | None, priority_fee: int, gas_price: int) -> Fees:
    """Fees for a new transaction: EIP-1559 where blocks carry a base fee, legacy elsewhere.

    The cap allows the base fee to double before the transaction stops being includable,
    which covers six full blocks in a row at EIP-1559's 12.5% per block.
    """
    if base_fee is None:
        return Fees(gas_price=max(gas_price, 1))
    priority = max(priority_fee, 1)
    return Fees(max_fee_per_gas=2 * base_fee + priority, max_priority_fee_per_gas=priority)
