"""`py-counter`: a module-level counter, answered as `count=N`.

The host instantiates a fresh component per request, so the answer is always `count=1`:
state left in module globals by one request is never seen by the next.
"""

from llmchat_http import respond
from wit_world import exports
from wit_world.imports.types import IncomingRequest, ResponseOutparam

count = 0


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        global count
        count += 1
        respond(response_out, 200, f"count={count}")
