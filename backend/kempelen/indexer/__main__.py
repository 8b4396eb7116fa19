"""`python -m kempelen.indexer index ...`: the indexer alone, without the rest of the CLI."""

from kempelen.indexer.cli import app

app(prog_name="kempelen-indexer")
