"""Named plug-ins of the library (acquisition functions, initial topologies): one registry class for both.

A registry maps a name to a class; `make` builds an instance from a name, a class (with its options) or
takes an instance as it is, and refuses an option the class's __init__ does not have, naming it as a config
key would (`acq.cc`, `init.iterations`).
"""
import inspect
from typing import Generic, TypeVar

from dst_cli.sparse.errors import SparseConfigError, invalid

Plugin = TypeVar("Plugin")


class Registry(Generic[Plugin]):
    """Classes derived from `base`, by name; `key` is the option's name in errors ("acq", "init")."""

    def __init__(self, key: str, base: type[Plugin]):
        self.key, self.base = key, base
        self.classes: dict[str, type[Plugin]] = {}

    def register(self, name: str):
        """Class decorator: make a subclass of `base` available by `name` (sets its `name` attribute)."""

        def register(cls: type[Plugin]) -> type[Plugin]:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"registering {name!r} needs a {self.base.__name__} subclass, got {cls!r}")
            taken = self.classes.get(name)
            if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
                raise ValueError(f"{self.key} name {name!r} is already taken by {taken.__module__}.{taken.__qualname__}")
            cls.name = name
            self.classes[name] = cls
            return cls

        return register

    def names(self) -> list[str]:
        return list(self.classes)

    def make(self, spec: "str | type[Plugin] | Plugin", options: dict | None = None) -> Plugin:
        """An instance from a registered name or a class (built with `options`), or an instance as it is."""
        options = options or {}
        if isinstance(spec, self.base):
            if options:
                raise SparseConfigError(f"{self.key}_options", f"{self.key}_options cannot be given with a "
                                        f"{self.base.__name__} instance; allowed: options with a name or a class")
            return spec
        if isinstance(spec, str):
            if spec not in self.classes:
                raise invalid(self.key, spec, " | ".join(self.classes))
            spec = self.classes[spec]
        if not (isinstance(spec, type) and issubclass(spec, self.base)):
            raise invalid(self.key, spec, f"a registered name ({' | '.join(self.classes)}), a {self.base.__name__} "
                          "subclass or instance")
        accepted = option_names(spec)
        label = getattr(spec, "name", "") or spec.__qualname__
        for option in options:
            if option not in accepted:
                raise SparseConfigError(f"{self.key}.{option}", f"{self.key}.{option} is not an option of "
                                        f"{self.key}={label}; allowed: {', '.join(accepted) or 'no options'}")
        return spec(**options)


def option_names(cls: type) -> list[str]:
    """The keyword options of a class's __init__."""
    return [p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def options_repr(instance: object) -> str:
    """`Name(a=1, b=2)`: the instance's registered name (or class name) and its options' current values."""
    label = getattr(instance, "name", "") or type(instance).__qualname__
    values = ", ".join(f"{option}={getattr(instance, option)!r}" for option in option_names(type(instance))
                       if hasattr(instance, option))
    return f"{label}({values})"
