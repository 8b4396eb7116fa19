"""What every command shares: connection options, durations, and one-sentence errors."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Annotated, Callable

import httpx
import typer
from rich.console import Console

from kempelen.chain.contracts import Chain
from kempelen.errors import KempelenError
from kempelen.sdk.keys import Signer, load_signer

console = Console()
err_console = Console(stderr=True)

DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_RELAY = "http://127.0.0.1:8000"

RpcOption = Annotated[str, typer.Option("--rpc", envvar="KEMPELEN_RPC_URL",
                                        help="Ethereum JSON-RPC URL.")]
RelayOption = Annotated[str, typer.Option("--relay", envvar="KEMPELEN_RELAY_URL", help="Relay base URL.")]
KeystoreOption = Annotated[Path | None, typer.Option(
    "--keystore", "-k", envvar="KEMPELEN_KEYSTORE", dir_okay=False,
    help="Encrypted keystore file (password: --password or $KEMPELEN_KEYSTORE_PASSWORD). "
         "Without it, the key comes from $KEMPELEN_PRIVATE_KEY.")]
PasswordOption = Annotated[str | None, typer.Option("--password", envvar="KEMPELEN_KEYSTORE_PASSWORD",
                                                    hide_input=True, help="Keystore password.")]

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """'90m', '3d', '3600' -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration: write e.g. 3600, 90m, 12h, 3d, 2w")
    return int(match.group(1)) * _UNITS[match.group(2)]


def signer(keystore: Path | None, password: str | None) -> Signer:
    return load_signer(keystore, password)


def connect(rpc: str) -> Chain:
    return Chain(rpc)


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def friendly(command: Callable) -> Callable:
    """Turn expected failures into one clear sentence and a non-zero exit, never a traceback."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KempelenError as exc:
            raise fail(str(exc)) from None
        except httpx.ConnectError as exc:
            raise fail(f"cannot reach {exc.request.url.copy_with(path='/', query=None)}: is it running?") from None
        except httpx.HTTPStatusError as exc:
            raise fail(f"{exc.request.method} {exc.request.url.path} failed: "
                       f"{exc.response.status_code} {exc.response.text[:300]}") from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except OSError as exc:
            raise fail(str(exc)) from None

    return run


def default_home() -> Path:
    return Path(os.environ.get("KEMPELEN_HOME", Path.home() / ".kempelen"))
