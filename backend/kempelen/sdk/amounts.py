"""Token amounts as people write them ("0.05") and as contracts count them (base units)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from kempelen.errors import KempelenError


class AmountError(KempelenError):
    """An amount that is not a non-negative number with at most the token's decimals."""


def to_base_units(amount: str | int | Decimal, decimals: int) -> int:
    """'0.05' with 6 decimals -> 50000. Refuses negatives and more precision than the token has."""
    if isinstance(amount, int):
        return amount * 10**decimals
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        raise AmountError(f"not an amount: {amount!r} (write it like 0.05)") from None
    if not value.is_finite() or value < 0:
        raise AmountError(f"amount must be a non-negative number, got {amount!r}")
    scaled = value.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise AmountError(f"{amount} has more than {decimals} decimal places for this token")
    return int(scaled)


def format_amount(base_units: int, decimals: int, symbol: str = "") -> str:
    """50000 with 6 decimals -> '0.05' (trailing zeros dropped), with the symbol if given."""
    text = format(Decimal(base_units).scaleb(-decimals).normalize(), "f")
    return f"{text} {symbol}".strip()
