"""`py-loop`: burns CPU until the host's deadline stops it.

`?ms=N` busy-spins N ms and answers `spun N ms`. Without a query it loops forever without
calling the host; the epoch deadline interrupts the interpreter loop.
"""

import time

from llmchat_http import query, respond
from wit_world import exports
from wit_world.imports.types import IncomingRequest, ResponseOutparam


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        params = query(request)
        if "ms" in params:
            try:
                ms = int(params["ms"])
            except ValueError:
                respond(response_out, 400, f"ms: not a number: {params['ms']!r}")
                return
            end = time.monotonic() + ms / 1000
            while time.monotonic() < end:
                pass
            respond(response_out, 200, f"spun {ms} ms")
            return
        n = 0
        while True:
            n += 1
