"""A kong-pdk plugin that computes for config.work_ms, makes one PDK call, computes again.

The runtime's compute times (``--compute-times``) must count both stretches of work and none of the
time Kong takes to answer the call.
"""

import time

Schema = ({"work_ms": {"type": "number", "description": "Milliseconds of CPU work before and after the PDK call."}},)
version = "1.0.0"
priority = 10


def _work(ms):
    deadline = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < deadline:
        pass


class Plugin:
    def __init__(self, config):
        self.work_ms = float(config["work_ms"])

    def access(self, kong):
        _work(self.work_ms)
        kong.request.get_header("x-probe")
        _work(self.work_ms)
