"""`py-fail`: a queue processor driven by the payload's `action`.

- `{"action": "raise"}`: raises ValueError; `process` turns any exception into a `retry`
  job error (`Err(JobError_Retry(...))`), as a Python processor should.
- `{"action": "raise_uncaught"}`: raises ValueError past that guard, to show what
  componentize-py does with it (a trap, which the host counts as a retry).
- `{"action": "fail"}`: the `fail` job error: dead-lettered at once.
- anything else that is a JSON object: `Ok`.
A payload that is not a JSON object is `fail`, naming the problem: retrying cannot fix it.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.processor import Job, JobError_Fail, JobError_Retry


class Processor(exports.Processor):
    def process(self, job: Job) -> str:
        try:
            payload = json.loads(job.payload)
        except ValueError as e:
            raise Err(JobError_Fail(f"payload is not JSON: {e}"))
        if not isinstance(payload, dict):
            raise Err(JobError_Fail("payload is not a JSON object"))
        action = payload.get("action")
        if action == "raise_uncaught":
            raise ValueError("py-fail: deliberate uncaught exception")
        try:
            return run(action)
        except Err:
            raise
        except Exception as e:
            raise Err(JobError_Retry(f"{type(e).__name__}: {e}"))


def run(action: object) -> str:
    if action == "raise":
        raise ValueError("py-fail: deliberate exception")
    if action == "fail":
        raise Err(JobError_Fail("asked to fail"))
    return f"ok ({action or 'no action'})"
