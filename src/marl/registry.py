"""A registry of swappable components.

Adding a component is one module with a ``@REGISTRY.register(name, config=...)`` decorator plus
one YAML file in the matching ``conf/<kind>/`` group. The decorator also stores the component's
typed config dataclass in Hydra's ConfigStore as ``<kind>/<name>_schema`` so that the YAML file can
list it in its defaults and get type checking for free. A preset that picks a config per mixer
falls back to its folder's ``default.yaml`` for a mixer without one (:func:`store_preset_defaults`).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from hydra.core.config_store import ConfigStore

from marl.errors import ConfigError

T = TypeVar("T")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # every component's and preset's YAML


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


def store_preset_defaults() -> None:
    """Give every registered mixer a config in each folder from which a preset picks one per mixer.

    A preset may choose a group's config by mixer, from ``conf/<group>/<preset>/`` (preset/epymarl.yaml:
    ``override /agent: epymarl/${mixer}``). A mixer without its own file there gets that folder's
    ``default.yaml``, stored in Hydra's ConfigStore under the mixer's name: a new mixer is one
    module and one YAML under every preset, instead of Hydra's MissingConfigException under some.
    """
    store = ConfigStore.instance()
    for default in sorted(CONF_DIR.glob("*/*/default.yaml")):
        folder = default.parent
        if not (CONF_DIR / "preset" / f"{folder.name}.yaml").is_file():
            continue  # not a preset's folder
        group = f"{folder.parent.name}/{folder.name}"
        for mixer in MIXERS.names():
            if not (folder / f"{mixer}.yaml").is_file():
                store.store(group=group, name=mixer, package=folder.parent.name,
                            node={"defaults": [f"/{group}/default@_here_", "_self_"]})


def import_all_components() -> None:
    """Register every component (and its config under every preset: :func:`store_preset_defaults`)."""
    for registry in ALL:
        registry.import_all()
    store_preset_defaults()
