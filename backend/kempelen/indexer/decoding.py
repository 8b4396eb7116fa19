"""Raw `eth_getLogs` entries straight to `chain_events` rows: the indexer's hot path.

Decoding is kempelen.protocol.events (word slicing, memoized checksums); this adds the
JSON-safe row form the `chain_events` table stores.
"""

from __future__ import annotations

from kempelen.indexer.projection import event_row
from kempelen.protocol.events import EventDecoder, recorded_outcomes, submitted_answers


class LogDecoder:
    """Decodes logs of the contracts whose ABIs it was given into `chain_events` rows."""

    def __init__(self, chain_id: int, *abis: list[dict]):
        self.chain_id = chain_id
        self._decoder = EventDecoder(*abis)

    def row(self, log: dict) -> dict | None:
        """The row of one raw JSON-RPC log; None for an event these ABIs do not declare.

        Raises ValueError for a log that does not decode, for an AnswersSubmitted whose task
        bitmap and digests disagree, and for an OutcomesRecorded whose workers and counts differ
        in length: its answers or outcomes cannot be told, so it is refused like any undecodable
        log (the runner stops with its position) rather than stored half-understood.
        """
        event = self._decoder.decode(log)
        if event is None:
            return None
        if event.name == "AnswersSubmitted":
            submitted_answers(event.args)
        elif event.name == "OutcomesRecorded":
            recorded_outcomes(event.args)
        return event_row(self.chain_id, event)
