"""Which JSON-schema format an endpoint takes (structured output with `structured_output = "auto"`),
probed one call at a time and remembered per endpoint for the life of the process."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from curate.config import EndpointConfig
from curate.llm.budget import endpoint_identity
from curate.llm.requests import SCHEMA_FORMATS

log = logging.getLogger("curate.llm")

# The schema format each endpoint takes, by endpoint identity (curate.llm.budget.endpoint_identity),
# for the life of the process: set as soon as a format is refused (the next one) or accepted, so
# later calls, later runs and runs on other threads skip what the endpoint already refused.
ACCEPTED_FORMAT: dict[tuple[str, str, str], str | None] = {}


@dataclass
class RunState:
    """What one complete_frame run learns as it goes (shared by its concurrent calls).

    While the schema format is not known for the endpoint (`known` False: nothing remembered yet),
    one call at a time sends it (the probe) and the others wait for its answer, so a server that
    refuses json_schema sees one refused request, not one per call in flight."""

    schema_format: str | None
    memo: tuple[str, str, str] | None = None  # where to remember the format; None: not remembered ("off", demanded)
    known: bool = True
    stats: dict[str, int] = field(default_factory=lambda: {"calls": 0, "retries": 0})
    _probe: asyncio.Event | None = None

    @classmethod
    def start(cls, endpoint: EndpointConfig, response_schema: dict | None) -> RunState:
        """A run's state: with structured_output "auto", what the process already knows of the endpoint."""
        if endpoint.structured_output == "auto" and response_schema:
            memo = endpoint_identity(endpoint)
            return cls(schema_format=ACCEPTED_FORMAT.get(memo, "json_schema"), memo=memo, known=memo in ACCEPTED_FORMAT)
        return cls(schema_format={"off": None}.get(endpoint.structured_output, "json_schema"))

    async def format_to_send(self) -> tuple[str | None, bool]:
        """(format to send, whether this call is the probe that must call `probed`)."""
        while not self.known:
            if self._probe is None:
                self._probe = asyncio.Event()
                return self.schema_format, True
            await self._probe.wait()
        return self.schema_format, False

    def probed(self, answered: bool, sent: str | None) -> None:
        """The probe's request ended: `answered` when the server took the format (any 200)."""
        if answered:
            self.known = True
            self._remember()
        elif self.schema_format == sent:
            # It failed for another reason (timeout, 5xx, dropped): stop probing one call at a time,
            # or a stalled endpoint would get this run's calls serially, one timeout each. Nothing
            # is remembered; a refusal on a later call still moves the run to the next format.
            self.known = True
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.set()

    def downgrade_schema_format(self, rejected: str | None) -> bool:
        """The server refused `rejected`; move to the next format. False when there is none."""
        if rejected is None:
            return False
        if self.schema_format == rejected:
            self.schema_format = SCHEMA_FORMATS[SCHEMA_FORMATS.index(rejected) + 1]
            self.known = self.known or self.schema_format is None  # no response_format: nothing left to refuse
            self._remember()
            log.warning("endpoint rejected response_format %s; using %s", rejected, self.schema_format or "parse-and-retry")
        return True

    def _remember(self) -> None:
        if self.memo is not None:
            ACCEPTED_FORMAT[self.memo] = self.schema_format
