"""--compute-times: what each event computed, without the time Kong took to answer its PDK calls."""

from __future__ import annotations

import time
from pathlib import Path

from tests.runtime.raw_client import RawKong, running_server

PLUGIN = str(Path(__file__).parent / "plugins" / "timed_work.py")
WORK_MS = 20.0
KONG_ANSWERS_AFTER_S = 0.3


def _slow_event(kong: RawKong, iid: int) -> float:
    """One access event whose PDK call Kong answers only after KONG_ANSWERS_AFTER_S; its wall time."""
    started = time.perf_counter()
    err, result = kong.call("plugin.HandleEvent", {"InstanceId": iid, "EventName": "access"})
    assert err is None, err
    assert result["Data"]["Method"] == "kong.request.get_header"
    time.sleep(KONG_ANSWERS_AFTER_S)
    err, result = kong.call("plugin.Step", {"EventId": result["EventId"], "Data": None})
    assert err is None and result["Data"] == "ret", (err, result)
    return time.perf_counter() - started


def test_each_event_s_compute_time_counts_the_handler_s_work_and_not_kong_s_answer(tmp_path: Path) -> None:
    times = tmp_path / "compute.tsv"
    with running_server(PLUGIN, tmp_path, "--compute-times", str(times)) as sock:
        kong = RawKong(sock)
        iid = kong.start_instance("timed_work", {"work_ms": WORK_MS})
        walls = [_slow_event(kong, iid) for _ in range(3)]
    lines = times.read_text().splitlines()  # written out when the server stopped
    assert len(lines) == 3
    for line, wall in zip(lines, walls, strict=True):
        phase, micros = line.split("\t")
        assert phase == "access"
        computed = float(micros) / 1e6
        assert computed >= 2 * WORK_MS / 1000  # both stretches of work
        assert wall >= KONG_ANSWERS_AFTER_S and computed < wall - 0.8 * KONG_ANSWERS_AFTER_S  # not the wait


def test_without_the_option_nothing_is_timed(tmp_path: Path) -> None:
    with running_server(PLUGIN, tmp_path) as sock:
        kong = RawKong(sock)
        iid = kong.start_instance("timed_work", {"work_ms": 1.0})
        assert kong.run_event(iid, "access")[0]["Method"] == "kong.request.get_header"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tsv") == []
