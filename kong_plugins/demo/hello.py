"""The smallest useful kong-pdk plugin: greets the caller with a response header.

Written exactly as for kong-pdk (no import from this package), so the same file runs on the stock
kong-pdk server and on ours; the benchmark and the stock-vs-ours tests use it. ``calls`` in the
config sets how many PDK calls the access handler makes (the benchmark's "+2" and "+4" scripts).
"""

Schema = (
    {"message": {"type": "string", "default": "hello", "description": "Greeting put in the X-Hello header."}},
    {"calls": {"type": "integer", "default": 2, "between": [1, 16],
               "description": "How many PDK calls the access handler makes (benchmark knob)."}},
)

version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config):  # type: ignore[no-untyped-def]
        self.message = config.get("message") or "hello"
        self.calls = int(config.get("calls") or 2)

    def access(self, kong):  # type: ignore[no-untyped-def]
        host = kong.request.get_header("host")
        for _ in range(self.calls - 2):
            kong.request.get_header("x-padding")
        kong.response.set_header("X-Hello", f"{self.message} {host}")
