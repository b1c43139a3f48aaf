"""The one error the renderers raise: a clear line naming the env or the path and what to do."""

from marl.errors import ConfigError


class RenderError(ConfigError):
    """An episode cannot be rendered as asked (an env without a renderer, a path of unknown type)."""
