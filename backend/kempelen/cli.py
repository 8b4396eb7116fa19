"""`kempelen`: the command line for requesters, workers, relay operators and auditors."""

from __future__ import annotations

import typer

from kempelen.audit import cli as audit
from kempelen.commands import deploy, requester, stack, worker
from kempelen.indexer import cli as indexer
from kempelen.ipfs import cli as ipfs
from kempelen.relay import cli as relay

app = typer.Typer(
    help="Kempelen: open, verifiable micropayments for human data labeling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(requester.app, name="requester")
app.add_typer(worker.app, name="worker")
app.add_typer(ipfs.app, name="ipfs")
app.command("deploy")(deploy.deploy)
app.command("index")(indexer.index)
app.command("audit")(audit.audit)
app.command("serve")(relay.serve)
app.command("up")(stack.up)

if __name__ == "__main__":
    app()
