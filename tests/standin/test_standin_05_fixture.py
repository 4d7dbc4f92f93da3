"""The ``kong_standin`` pytest fixture plugin authors use (registered through the pytest11 entry point)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)

PROBE = Path(__file__).with_name("standin_probe_plugin.py")

DECK: dict[str, Any] = {
    "_format_version": "3.0",
    "services": [{"name": "api", "url": "http://api.internal", "routes": [
        {"name": "blocked", "paths": ["/blocked"],
         "plugins": [{"name": "standin_probe_plugin", "config": {"mode": "exit"}}]},
        {"name": "open", "paths": ["/open"]},
    ]}],
}


@pytest.mark.parametrize("stock", [False, True], ids=["ours", "stock-kong-pdk"])
def test_fixture_serves_a_plugin_file(kong_standin: Any, stock: bool) -> None:
    gw = kong_standin(DECK, plugins=[PROBE], stock_kong_pdk=stock)
    assert gw.request("GET", "/blocked").status == 403
    assert gw.request("GET", "/open").status == 200


def test_fixture_rejects_unknown_plugins(kong_standin: Any) -> None:
    from kong_plugins.errors import ConfigError

    with pytest.raises(ConfigError, match="not supported"):
        kong_standin(DECK)  # the probe plugin is referenced but no server serves it
