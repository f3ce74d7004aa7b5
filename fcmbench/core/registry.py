"""Find codecs, task models and datasets by name.

Built-ins and third-party packages register the same way, through the entry-point groups
``fcmbench.methods``, ``fcmbench.task_models`` and ``fcmbench.datasets``; code in the running process may
use the :meth:`Registry.register` decorator instead. Listing names reads package metadata only: nothing is
imported until :meth:`Registry.get`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from fcmbench.core.errors import FcmbenchError


class Registry:
    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._local: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: ``@methods.register("mycodec")`` on a class or builder function."""

        def add(obj: Any) -> Any:
            self._local[name] = obj
            return obj

        return add

    def _entry_points(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        return sorted(set(self._entry_points()) | set(self._local))

    def get(self, name: str) -> Any:
        if name in self._local:
            return self._local[name]
        entry = self._entry_points().get(name)
        if entry is None:
            known = ", ".join(self.names()) or "(none)"
            raise FcmbenchError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        try:
            return entry.load()
        except Exception as err:  # a broken plugin must not look like an fcmbench bug
            raise FcmbenchError(
                f"{self.kind} {name!r} is registered by {entry.value!r} but failed to load: "
                f"{type(err).__name__}: {err}. Reinstall or fix that package."
            ) from err

    def without_aliases(self, names: list[str]) -> list[str]:
        """Each registered object once: of names that point to the same object (``mfiba`` and ``mfiba-elic``),
        keep the one that is the object's own ``name``."""
        return [name for name in names if self.canonical(name) == name]

    def resolve(self, spec: str) -> list[str]:
        """``"a,b"`` or ``"all"`` -> checked names, in the order given."""
        if spec.strip() == "all":
            return self.without_aliases(self.names())
        names = [part.strip() for part in spec.split(",") if part.strip()]
        if not names:
            raise FcmbenchError(f"no {self.kind} named; give a comma-separated list or 'all'")
        for name in names:
            if name not in self._local and name not in self._entry_points():
                known = ", ".join(self.names()) or "(none)"
                raise FcmbenchError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return list(dict.fromkeys(self.canonical(name) for name in names))

    def canonical(self, name: str) -> str:
        """An alias (another entry point to the same object, as ``mfiba`` for ``mfiba-elic``) -> the object's own
        ``name``, so that results, caches and reports know one name. Only aliases are loaded to find it."""
        targets = {n: ep.value for n, ep in self._entry_points().items()}
        target = targets.get(name)
        if target is None or list(targets.values()).count(target) == 1:
            return name
        return getattr(self.get(name), "name", name)


methods = Registry("method", "fcmbench.methods")
task_models = Registry("task model", "fcmbench.task_models")
datasets = Registry("dataset", "fcmbench.datasets")
