"""Sign-In with Ethereum (EIP-4361): parse the message by its ABNF, check its fields, recover its signer.

Pure: the one-time nonce is checked against the relay's table by the caller (api/routes/auth).
The signature is EIP-191 personal_sign over the exact message text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from eth_account.messages import defunct_hash_message
from eth_utils import is_checksum_address

from kempelen.protocol.signing import SignatureError, recover
from kempelen.relay.errors import LoginRefused

_HEADER = re.compile(r"^(?:(?P<scheme>[a-zA-Z][a-zA-Z0-9+\-.]*)://)?(?P<domain>[^\s/?#]+) "
                     r"wants you to sign in with your Ethereum account:$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NONCE = re.compile(r"^[a-zA-Z0-9]{8,}$")
_FIELDS = {"URI": "uri", "Version": "version", "Chain ID": "chain_id", "Nonce": "nonce",
           "Issued At": "issued_at", "Expiration Time": "expiration_time",
           "Not Before": "not_before", "Request ID": "request_id"}
_ORDER = list(_FIELDS)
CLOCK_SKEW = timedelta(minutes=5)


class SiweError(LoginRefused):
    """A Sign-In with Ethereum message that is malformed, stale, or for another relay."""


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str
    uri: str
    version: str
    chain_id: int
    nonce: str
    issued_at: datetime
    statement: str | None = None
    scheme: str | None = None
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = field(default=())

    def text(self) -> str:
        """The exact text a wallet signs for this message."""
        head = f"{self.scheme}://{self.domain}" if self.scheme else self.domain
        lines = [f"{head} wants you to sign in with your Ethereum account:", self.address, ""]
        if self.statement is not None:
            lines += [self.statement, ""]
        lines += [f"URI: {self.uri}", f"Version: {self.version}", f"Chain ID: {self.chain_id}",
                  f"Nonce: {self.nonce}", f"Issued At: {_iso(self.issued_at)}"]
        for label, value in (("Expiration Time", self.expiration_time), ("Not Before", self.not_before)):
            if value is not None:
                lines.append(f"{label}: {_iso(value)}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources:
            lines += ["Resources:", *(f"- {uri}" for uri in self.resources)]
        return "\n".join(lines)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _timestamp(name: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SiweError(f"SIWE {name} is not an RFC 3339 date-time: {text!r}") from None
    if moment.tzinfo is None:
        raise SiweError(f"SIWE {name} needs a time zone (e.g. Z): {text!r}")
    return moment


def parse(text: str) -> SiweMessage:
    """Parse an EIP-4361 message; raise SiweError naming the first part that is wrong."""
    lines = text.split("\n")
    header = _HEADER.match(lines[0]) if lines else None
    if header is None:
        raise SiweError("SIWE message must start with '<domain> wants you to sign in with your "
                        "Ethereum account:'")
    if len(lines) < 4 or not _ADDRESS.match(lines[1]):
        raise SiweError("SIWE message's second line must be a 0x address")
    if not is_checksum_address(lines[1]):
        raise SiweError("SIWE address must be EIP-55 checksummed")
    if lines[2] != "":
        raise SiweError("SIWE address must be followed by an empty line")
    statement, rest = _statement(lines[3:])
    values, resources = _fields(rest)
    for required in ("uri", "version", "chain_id", "nonce", "issued_at"):
        if required not in values:
            raise SiweError(f"SIWE message lacks its {required.replace('_', ' ')} line")
    if not values["chain_id"].isdigit():
        raise SiweError(f"SIWE Chain ID must be a decimal number: {values['chain_id']!r}")
    if not _NONCE.match(values["nonce"]):
        raise SiweError("SIWE nonce must be at least 8 letters or digits")
    return SiweMessage(
        domain=header["domain"], scheme=header["scheme"], address=lines[1], statement=statement,
        uri=values["uri"], version=values["version"], chain_id=int(values["chain_id"]),
        nonce=values["nonce"], issued_at=_timestamp("Issued At", values["issued_at"]),
        expiration_time=_optional_time(values, "expiration_time", "Expiration Time"),
        not_before=_optional_time(values, "not_before", "Not Before"),
        request_id=values.get("request_id"), resources=tuple(resources))


def _statement(lines: list[str]) -> tuple[str | None, list[str]]:
    """Split off the optional statement (one line, then an empty line) before the fields."""
    if lines and lines[0] == "":
        return None, lines[1:]  # the ABNF's empty-statement form: two empty lines
    if lines and not lines[0].startswith("URI: "):
        if "\n" in lines[0] or len(lines) < 2 or lines[1] != "":
            raise SiweError("SIWE statement must be one line followed by an empty line")
        return lines[0], lines[2:]
    return None, lines


def _fields(lines: list[str]) -> tuple[dict[str, str], list[str]]:
    values: dict[str, str] = {}
    position = 0
    for index, line in enumerate(lines):
        if line == "Resources:":
            resources = lines[index + 1:]
            if not all(r.startswith("- ") and len(r) > 2 for r in resources):
                raise SiweError("SIWE resources must be lines of the form '- <uri>'")
            return values, [r[2:] for r in resources]
        label, sep, value = line.partition(": ")
        if not sep or label not in _FIELDS:
            raise SiweError(f"unexpected line in SIWE message: {line[:80]!r}")
        if _ORDER.index(label) < position:
            raise SiweError(f"SIWE field {label!r} is out of order")
        position = _ORDER.index(label) + 1
        values[_FIELDS[label]] = value
    return values, []


def _optional_time(values: dict[str, str], key: str, name: str) -> datetime | None:
    return _timestamp(name, values[key]) if key in values else None


def check(message: SiweMessage, *, domain: str, chain_id: int, now: datetime) -> None:
    """Refuse a message meant for another site or chain, or outside its validity interval."""
    if message.domain != domain:
        raise SiweError(f"SIWE message is for domain {message.domain!r}, this relay is {domain!r}")
    if message.version != "1":
        raise SiweError(f"SIWE version must be 1, got {message.version!r}")
    if message.chain_id != chain_id:
        raise SiweError(f"SIWE message is for chain {message.chain_id}, this relay serves {chain_id}")
    if message.issued_at > now + CLOCK_SKEW:
        raise SiweError("SIWE message is issued in the future")
    if message.expiration_time is not None and message.expiration_time <= now:
        raise SiweError("SIWE message has expired")
    if message.not_before is not None and message.not_before > now + CLOCK_SKEW:
        raise SiweError("SIWE message is not valid yet (Not Before)")


def signer(text: str, signature: bytes) -> str:
    """The address whose EIP-191 personal_sign of `text` is `signature`."""
    try:
        return recover(bytes(defunct_hash_message(text=text)), signature)
    except SignatureError as exc:
        raise SiweError(f"bad SIWE signature: {exc}") from None
