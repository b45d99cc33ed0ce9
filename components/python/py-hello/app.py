"""`py-hello`: answers every request with "Hello, world!" (the Python benchmark baseline)."""

from llmchat_http import respond
from wit_world import exports
from wit_world.imports.types import IncomingRequest, ResponseOutparam


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        respond(response_out, 200, "Hello, world!")
