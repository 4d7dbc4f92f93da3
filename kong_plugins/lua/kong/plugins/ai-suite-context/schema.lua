-- ai-suite-context: enable it globally (see handler.lua for why); one setting, the body's size.
local typedefs = require "kong.db.schema.typedefs"

return {
  name = "ai-suite-context",
  fields = {
    -- per-consumer instances would leave other consumers' requests without facts
    { consumer = typedefs.no_consumer },
    { protocols = typedefs.protocols_http },
    { config = {
        type = "record",
        fields = {
          -- Bodies up to this many bytes travel with the facts (0: none): one round trip fewer
          -- for each suite plugin that reads the body. Larger or chunked bodies: each plugin
          -- reads them itself, with its own limit.
          { request_body_max_bytes = { type = "integer", default = 65536, between = { 0, 67108864 } } },
        },
      },
    },
  },
}
