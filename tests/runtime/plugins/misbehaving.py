"""One kong-pdk plugin whose config picks a misbehaviour; written for kong-pdk, runs on both servers.

config.mode:
  raise_early   raises before any PDK call
  raise_late    raises after one PDK call
  exit_early    kong.response.exit as the first PDK call, then tries to keep going
  exit_then_calls  exit after one call, then more PDK calls in a finally block
  wait          blocks (before any PDK call) until an instance in mode "release" runs
  release       releases the "wait" instances, then makes a PDK call
  hang          sleeps for a long time before any PDK call
  ok            one PDK call, then returns
"""

import os
import threading
import time

Schema = ({"mode": {"type": "string", "description": "Which misbehaviour this instance shows."}},)
version = "1.0.0"
priority = 10

RELEASE = threading.Event()
MARKER_DIR = os.environ.get("MISBEHAVING_MARKERS", "/tmp")


def _mark(name):
    with open(os.path.join(MARKER_DIR, name), "a") as f:
        f.write("x")


class Plugin:
    def __init__(self, config):
        self.mode = config["mode"]
        if self.mode == "init_raises":
            raise RuntimeError("cannot start: backend unreachable")

    def access(self, kong):
        mode = self.mode
        if mode == "raise_early":
            raise ValueError("boom before any PDK call")
        if mode == "raise_late":
            kong.request.get_header("host")
            raise ValueError("boom after a PDK call")
        if mode == "exit_early":
            kong.response.exit(403, {"message": "denied"})
            _mark("after_exit")
            kong.request.get_header("host")
            return
        if mode == "exit_then_calls":
            try:
                kong.request.get_header("host")
                kong.response.exit(429, {"message": "slow down"})
            finally:
                try:
                    kong.request.get_header("x-after-exit")
                except BaseException:
                    _mark("finally_call_refused")
                    raise
            return
        if mode == "wait":
            if not RELEASE.wait(20):
                raise TimeoutError("never released")
            kong.response.set_header("X-Waited", "yes")
            return
        if mode == "release":
            RELEASE.set()
            kong.response.set_header("X-Released", "yes")
            return
        if mode == "hang":
            time.sleep(3600)
            return
        kong.request.get_header("host")
