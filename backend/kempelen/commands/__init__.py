"""Commands of the `kempelen` CLI for requesters, workers and operators (assembled in kempelen.cli)."""
