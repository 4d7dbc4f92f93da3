#!/bin/sh
# Entry point of the kong-ai gateway image: optionally render the suite's storage backend into the
# declarative config (docker/render_storage.py), then hand over to Kong's own entrypoint unchanged.
#
#   KONG_AI_DECLARATIVE_SOURCE  the decK file as written (the repository's kong.yml, mounted read-only)
#   KONG_AI_STORAGE             JSON storage backend for every suite plugin that has a storage block,
#                               e.g. {"strategy":"redis","host":"redis","port":6379}; unset = as written
#   KONG_DECLARATIVE_CONFIG     the file Kong loads (the rendered copy when KONG_AI_STORAGE is set)
set -eu
if [ -n "${KONG_AI_STORAGE:-}" ]; then
  : "${KONG_AI_DECLARATIVE_SOURCE:?KONG_AI_STORAGE is set: KONG_AI_DECLARATIVE_SOURCE must name the decK file to render}"
  : "${KONG_DECLARATIVE_CONFIG:?KONG_AI_STORAGE is set: KONG_DECLARATIVE_CONFIG must name the file to write}"
  "${KONG_AI_VENV:-/opt/kong-ai}/bin/python" "${KONG_AI_VENV:-/opt/kong-ai}/share/render_storage.py" \
    "$KONG_AI_DECLARATIVE_SOURCE" "$KONG_DECLARATIVE_CONFIG" --storage "$KONG_AI_STORAGE"
fi
exec /docker-entrypoint.sh "$@"
