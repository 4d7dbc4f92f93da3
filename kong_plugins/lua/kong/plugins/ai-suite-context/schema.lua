-- ai-suite-context has nothing to configure: enable it globally (see handler.lua for why).
local typedefs = require "kong.db.schema.typedefs"

return {
  name = "ai-suite-context",
  fields = {
    -- per-consumer instances would leave other consumers' requests without facts
    { consumer = typedefs.no_consumer },
    { protocols = typedefs.protocols_http },
    { config = {
        type = "record",
        fields = {},
      },
    },
  },
}
