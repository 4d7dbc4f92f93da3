"""Small kong-pdk-style plugins used by the runtime benchmark, tests and documentation."""
