"""Instance lifecycle as Kong's plugin.lua expects it, over the real socket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.raw_client import RawKong, running_server, server_log

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def fail_closed(tmp_path: Path) -> Iterator[tuple[RawKong, Path]]:
    with running_server(str(PLUGINS / "fail_closed.py"), tmp_path) as sock:
        yield RawKong(sock), tmp_path


@pytest.fixture
def misbehaving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RawKong, Path]]:
    monkeypatch.setenv("MISBEHAVING_MARKERS", str(tmp_path))
    with running_server(str(PLUGINS / "misbehaving.py"), tmp_path) as sock:
        yield RawKong(sock), tmp_path


def test_start_instance_accepts_kong_extra_keys_and_returns_the_config(fail_closed: tuple[RawKong, Path]) -> None:
    kong, _ = fail_closed
    config = {"limit": 3, "__plugin_id": "5a0c", "__seq__": 7, "__key__": "plugins:fail:::"}
    err, status = kong.call("plugin.StartInstance", {"Name": "fail_closed", "Config": json.dumps(config)})
    assert err is None
    assert status["Config"] == config and isinstance(status["Id"], int)
    err, got = kong.call("plugin.InstanceStatus", status["Id"])
    assert err is None and got["Id"] == status["Id"]


def test_invalid_config_is_rejected_naming_the_field(fail_closed: tuple[RawKong, Path]) -> None:
    kong, prefix = fail_closed
    err, _ = kong.call("plugin.StartInstance", {"Name": "fail_closed", "Config": json.dumps({"limit": 0})})
    assert err == "invalid config for plugin fail_closed: config.limit: must be a positive integer"
    assert "config.limit" in server_log(prefix, "fail_closed")


def test_exception_in_init_fails_start_instance_and_server_lives_on(misbehaving: tuple[RawKong, Path]) -> None:
    kong, prefix = misbehaving
    err, _ = kong.call("plugin.StartInstance", {"Name": "misbehaving", "Config": json.dumps({"mode": "init_raises"})})
    assert "failed to start instance: RuntimeError: cannot start: backend unreachable" in err
    assert "Traceback" in server_log(prefix, "misbehaving")
    iid = kong.start_instance("misbehaving", {"mode": "ok"})
    assert kong.run_event(iid, "access") == [{"Method": "kong.request.get_header", "Args": ["host"]}]


def test_config_that_is_not_json_is_an_error(misbehaving: tuple[RawKong, Path]) -> None:
    kong, _ = misbehaving
    err, _ = kong.call("plugin.StartInstance", {"Name": "misbehaving", "Config": "{not json"})
    assert "config is not valid JSON" in err


def test_unknown_plugin_name_and_method(misbehaving: tuple[RawKong, Path]) -> None:
    kong, _ = misbehaving
    err, _ = kong.call("plugin.StartInstance", {"Name": "other", "Config": "{}"})
    assert "not served here" in err
    err, _ = kong.call("plugin.Frobnicate", {})
    assert "not supported" in err


def test_closed_or_unknown_instances_answer_no_plugin_instance(misbehaving: tuple[RawKong, Path]) -> None:
    kong, _ = misbehaving
    iid = kong.start_instance("misbehaving", {"mode": "ok"})
    err, closed = kong.call("plugin.CloseInstance", iid)
    assert err is None and closed["Id"] == iid
    # plugin.lua matches this phrase to start a new instance and retry the event.
    err, _ = kong.call("plugin.HandleEvent", {"InstanceId": iid, "EventName": "access"})
    assert err is not None and "no plugin instance" in err
    err, _ = kong.call("plugin.CloseInstance", iid)
    assert "no plugin instance" in err


def test_instance_ids_differ_across_server_restarts(tmp_path: Path) -> None:
    ids = []
    for _ in range(2):
        with running_server(str(PLUGINS / "misbehaving.py"), tmp_path) as sock:
            ids.append(RawKong(sock).start_instance("misbehaving", {"mode": "ok"}))
    # A stale id cached by Kong must not reach another instance of a restarted server.
    assert ids[0] != ids[1]


def test_get_status_lists_instances_and_pid(misbehaving: tuple[RawKong, Path]) -> None:
    kong, _ = misbehaving
    iid = kong.start_instance("misbehaving", {"mode": "ok"})
    err, status = kong.call("plugin.GetStatus")
    assert err is None
    plugin = status["Plugins"]["misbehaving"]
    assert [i["Id"] for i in plugin["Instances"]] == [iid]
    assert plugin["EventsInFlight"] == 0
    assert isinstance(status["Pid"], int)


def test_server_pid_notification_on_first_answer_of_a_connection(misbehaving: tuple[RawKong, Path]) -> None:
    from tests.runtime.raw_client import RawConnection

    kong, _ = misbehaving
    conn = RawConnection(kong.path)
    try:
        conn.call("plugin.GetStatus")
        conn.call("plugin.GetStatus")
        assert [n[1] for n in conn.notifications] == ["serverPid"]
    finally:
        conn.close()


def test_step_for_an_unknown_event_is_an_error(misbehaving: tuple[RawKong, Path]) -> None:
    kong, _ = misbehaving
    err, _ = kong.call("plugin.Step", {"EventId": 987654, "Data": None})
    assert "no event 987654" in err


def test_step_error_raises_pdk_error_in_the_handler(tmp_path: Path) -> None:
    plugin = tmp_path / "catches.py"
    plugin.write_text(
        "from kong_pdk.exception import PDKException\n"
        "Schema = ()\nversion = '1'\npriority = 1\n"
        "class Plugin:\n"
        "    def __init__(self, config): pass\n"
        "    def access(self, kong):\n"
        "        try:\n"
        "            kong.request.get_raw_body()\n"
        "        except PDKException as e:\n"
        "            kong.response.set_header('X-Error', str(e))\n"
    )
    with running_server(str(plugin), tmp_path) as sock:
        kong = RawKong(sock)
        iid = kong.start_instance("catches")
        err, first = kong.call("plugin.HandleEvent", {"InstanceId": iid, "EventName": "access"})
        err, second = kong.call("plugin.StepError", {"EventId": first["EventId"], "Data": "request body too big"})
        assert err is None
        assert second["Data"] == {"Method": "kong.response.set_header",
                                  "Args": ["X-Error", "kong.request.get_raw_body: request body too big"]}
