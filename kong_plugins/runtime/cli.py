"""Console scripts: ``kong-plugins-serve PLUGIN`` and one script per suite plugin.

These are what Kong's ``pluginserver_<name>_start_cmd`` / ``_query_cmd`` call. They accept every flag
of kong-pdk's dedicated server (``kong_pdk/cli.py``) so configurations written for kong-pdk keep
working; ``--no-lua-style``, ``-g`` and ``-m`` are accepted and have no effect: errors are always
Python style, and events always run concurrently on gevent in one process (kong-pdk's ``-m``
pickles the handler per event and loses instance state; its ``-g`` does not monkey-patch).
"""

# Monkey patching must precede every other import that may create sockets, locks or threads, so that
# plugin I/O (redis-py, httpx, time.sleep) yields to other events instead of blocking the server.
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

# trio's event loop needs ``select.epoll``, which gevent's patching removes, so importing trio
# raises AttributeError -- and httpcore (under httpx) imports trio whenever it is installed, only
# catching ImportError. Marking trio absent makes httpx work in plugins; trio could not run on
# top of gevent anyway.
if "trio" not in sys.modules:
    sys.modules["trio"] = None  # type: ignore[assignment]

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from kong_plugins import SUITE_PLUGINS, __version__  # noqa: E402
from kong_plugins.runtime.module import PluginLoadError, load_plugin_module  # noqa: E402
from kong_plugins.runtime.server import ComputeTimes, PluginServer, serve_unix_socket  # noqa: E402

DEFAULT_PREFIX = "/usr/local/kong/"


def build_parser(plugin: str | None) -> argparse.ArgumentParser:
    prog = plugin or "kong-plugins-serve"
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"Kong external plugin server ({'plugin ' + plugin if plugin else 'any kong-pdk plugin'}).",
    )
    if plugin is None:
        parser.add_argument(
            "plugin",
            help=f"a suite plugin ({', '.join(sorted(SUITE_PLUGINS))}), an importable module, or a .py file",
        )
    parser.add_argument("-p", "--kong-prefix", "-kong-prefix", dest="prefix", default=DEFAULT_PREFIX,
                        help="directory of the unix socket (default: %(default)s)")
    parser.add_argument("--socket-name", dest="socket_name", default=None,
                        help="socket file name in the prefix (default: <plugin-name>.sock)")
    parser.add_argument("--name", dest="name", default=None,
                        help="plugin name Kong sees (default: the module's NAME, else its file name)")
    parser.add_argument("--dump", "-dump", action="store_true",
                        help="print the plugin info Kong's query_cmd expects (a JSON list) and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-v info, -vv debug)")
    parser.add_argument("--version", "-version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--listen-queue-size", type=int, default=4096,
                        help="socket listen backlog (default: %(default)s)")
    parser.add_argument("--step-timeout", type=float, default=60.0,
                        help="seconds to wait for Kong's Step before an event is unwound (default: %(default)s)")
    parser.add_argument("--handler-timeout", type=float, default=30.0,
                        help="seconds a handler may run without a PDK call before it is failed (default: %(default)s)")
    parser.add_argument("--compute-times", metavar="FILE", default=os.environ.get("KONG_PLUGINS_COMPUTE_TIMES"),
                        help="append each event's compute time (handler time minus PDK waits) to FILE as "
                             "'phase<TAB>microseconds' lines (default: $KONG_PLUGINS_COMPUTE_TIMES; off)")
    compat = parser.add_argument_group("kong-pdk compatibility (accepted, no effect)")
    compat.add_argument("--no-lua-style", action="store_true", help="errors are always Python exceptions")
    mode = compat.add_mutually_exclusive_group()
    mode.add_argument("-m", "--multiprocessing", action="store_true", help="events always run on gevent")
    mode.add_argument("-g", "--gevent", action="store_true", help="events always run on gevent")
    return parser


def main(argv: Sequence[str] | None = None, plugin: str | None = None) -> int:
    args = build_parser(plugin).parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s [%(name)s] %(levelname)s %(message)s")
    target = plugin or args.plugin
    try:
        module = load_plugin_module(target, name=args.name)
    except PluginLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dump:
        sys.stdout.write(json.dumps([module.info()]))
        sys.stdout.flush()
        return 0
    if not os.path.isdir(args.prefix):
        print(f"error: prefix directory {args.prefix} does not exist; cannot create the socket", file=sys.stderr)
        return 2
    if args.multiprocessing or args.gevent:
        logging.getLogger("kong_plugins.runtime").info("-m/-g ignored: events always run on gevent")
    if module.skipped_phases:
        logging.getLogger("kong_plugins.runtime").info(
            "%s: empty phase methods not registered: %s", module.name, ", ".join(module.skipped_phases))
    socket_path = os.path.join(args.prefix, args.socket_name or f"{module.name}.sock")
    server = PluginServer(module, step_timeout=args.step_timeout, handler_timeout=args.handler_timeout,
                          compute_times=ComputeTimes(args.compute_times) if args.compute_times else None)
    serve_unix_socket(server, socket_path, listen_queue_size=args.listen_queue_size)
    return 0


def serve_main() -> None:
    sys.exit(main())


def ai_tier_quota_main() -> None:
    sys.exit(main(plugin="ai-tier-quota"))


def ai_prompt_inspector_main() -> None:
    sys.exit(main(plugin="ai-prompt-inspector"))


def ai_extraction_guard_main() -> None:
    sys.exit(main(plugin="ai-extraction-guard"))


if __name__ == "__main__":
    # `python -m kong_plugins.runtime.cli ai-tier-quota` serves a suite plugin like its console script.
    sys.exit(main())
