"""`py-memory-bomb`: allocates memory until the host's memory cap stops it.

`?mib=N` allocates and touches N MiB and answers `allocated N MiB`. Without a query it keeps
allocating 1 MiB chunks: once the host refuses to grow the memory, CPython raises
MemoryError, which escapes `handle` and ends the request in a trap.
"""

from llmchat_http import query, respond
from wit_world import exports
from wit_world.imports.types import IncomingRequest, ResponseOutparam

MIB = 1 << 20


def allocate(mib: int) -> list[bytearray]:
    chunks = []
    for _ in range(mib):
        chunk = bytearray(MIB)
        chunk[::4096] = b"\x01" * (MIB // 4096)  # touch every page
        chunks.append(chunk)
    return chunks


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        params = query(request)
        if "mib" in params:
            try:
                mib = int(params["mib"])
            except ValueError:
                respond(response_out, 400, f"mib: not a number: {params['mib']!r}")
                return
            chunks = allocate(mib)
            respond(response_out, 200, f"allocated {len(chunks)} MiB")
            return
        chunks = []
        while True:
            chunks.extend(allocate(1))
