"""A registry of swappable components.

Adding a component is one module with a ``@REGISTRY.register(name, config=...)`` decorator plus
one YAML file in the matching ``conf/<kind>/`` group. The decorator also stores the component's
typed config dataclass in Hydra's ConfigStore as ``<kind>/<name>_schema`` so that the YAML file can
list it in its defaults and get type checking for free.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from hydra.core.config_store import ConfigStore

from marl.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    factory: Callable[..., T]
    config: type


class Registry(Generic[T]):
    """Maps a component name (``cfg.name``) to its factory and config schema."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, Entry[T]] = {}
        self._imported = False

    def register(self, name: str, config: type) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(factory, config)
            ConfigStore.instance().store(group=self.kind, name=f"{name}_schema", node=config)
            return factory

        return decorator

    def import_all(self) -> None:
        """Import every module of the component package so that its decorators run."""
        if self._imported:
            return
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{self.package}.{info.name}")
        self._imported = True

    def names(self) -> list[str]:
        self.import_all()
        return sorted(self._entries)

    def get(self, name: str) -> Entry[T]:
        self.import_all()
        if name not in self._entries:
            raise ConfigError(
                f"{self.kind}.name={name!r} is not a registered {self.kind}; "
                f"choose one of: {', '.join(self.names())}"
            )
        return self._entries[name]

    def build(self, cfg: Any, **kwargs: Any) -> T:
        """Build the component named by ``cfg.name`` with its config and run-time arguments."""
        return self.get(cfg.name).factory(cfg, **kwargs)


AGENTS: Registry[Any] = Registry("agent", "marl.agents")
MIXERS: Registry[Any] = Registry("mixer", "marl.mixers")
BUFFERS: Registry[Any] = Registry("buffer", "marl.buffers")
ENVS: Registry[Any] = Registry("env", "marl.envs")
ALL = (AGENTS, MIXERS, BUFFERS, ENVS)


def import_all_components() -> None:
    for registry in ALL:
        registry.import_all()
