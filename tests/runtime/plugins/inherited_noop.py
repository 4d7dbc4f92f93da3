"""A plugin inheriting empty phase methods: only `access` does something."""

Schema = ()
version = "1.0.0"
priority = 1


class Base:
    def response(self, kong):
        pass

    def log(self, kong):
        """Nothing to log."""


class Plugin(Base):
    def __init__(self, config):
        pass

    def access(self, kong):
        kong.response.set_header("X-Plugin", "ran")
