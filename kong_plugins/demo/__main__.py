"""``python -m kong_plugins.demo``: the same as ``kong-ai-demo`` (works before a shell has the script on PATH)."""

from .cli import main

raise SystemExit(main())
