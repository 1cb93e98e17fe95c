"""`@dataclass` for plain record classes, without the cost of `dataclasses` at import.

`dataclasses.dataclass` compiles three methods per class (`exec` of generated
source) and builds a docstring through `inspect.signature`: 0.5-1 ms a class on
this project's machine, paid by every process that imports the class. The
submitter core alone has 13 of them (its actions and its state), and every
`jrs submit` imports it before it can say hello (bench/cluster.py, one-job
latency). This decorator gives what those classes use of a dataclass, built
without compiling anything:

- `__init__` taking the annotated fields in order, positionally or by name, with
  defaults and `field(default_factory=...)` (a fresh value per instance), and the
  same TypeErrors for missing, repeated or unknown arguments;
- `__eq__` field by field (same class only, as a dataclass's), `__repr__` as a
  dataclass's, and no `__hash__` (a mutable dataclass with `eq` has none);
- class attributes keep the defaults, as a dataclass leaves them.

Not supported (refused where it would silently differ): options (`frozen`,
`order`, ...), base classes with fields, `ClassVar`/`InitVar` annotations,
`__post_init__`, `__slots__`, a `__setattr__` of its own, `field()` options other
than `default` and `default_factory`.
Use `dataclasses` for those.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

_MISSING: Any = object()


class Field:
    __slots__ = ("default", "default_factory")

    def __init__(self, default: Any, default_factory: Optional[Callable[[], Any]]) -> None:
        self.default = default
        self.default_factory = default_factory


def field(*, default: Any = _MISSING,
          default_factory: Optional[Callable[[], Any]] = None) -> Any:
    if default is not _MISSING and default_factory is not None:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory)


def _own_annotations(cls: type) -> dict:
    """The class's own annotations, in order (3.14 computes them on first access)."""
    own = cls.__dict__.get("__annotations__")  # noqa: RUF063 (no typing_extensions here)
    if own is None and sys.version_info >= (3, 10):
        own = getattr(cls, "__annotations__", None)
    return own or {}


def dataclass(cls: type) -> type:
    if not isinstance(cls, type):
        raise TypeError("plain.dataclass takes no options; use dataclasses for them")
    if "__post_init__" in cls.__dict__ or any(
            "__dataclass_fields__" in vars(b) or "_plain_fields" in vars(b)
            for b in cls.__mro__[1:]):
        raise TypeError(f"{cls.__name__}: not a plain record (use dataclasses)")
    names: list = []
    defaults: dict = {}
    factories: dict = {}
    for name, note in _own_annotations(cls).items():
        text = note if isinstance(note, str) else getattr(note, "__name__", "")
        if "ClassVar" in text or "InitVar" in text:
            raise TypeError(f"{cls.__name__}.{name}: ClassVar/InitVar (use dataclasses)")
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, Field):
            if value.default_factory is not None:
                factories[name] = value.default_factory
                delattr(cls, name)  # (as a dataclass: no class attribute for a factory)
                value = _MISSING
            elif value.default is _MISSING:
                delattr(cls, name)
                value = _MISSING
            else:
                value = value.default
                setattr(cls, name, value)
        if value is not _MISSING:
            defaults[name] = value
        elif name not in factories and (defaults or factories):
            raise TypeError(f"non-default argument {name!r} follows default argument")
        names.append(name)
    fields = tuple(names)
    count = len(fields)
    qualname = cls.__qualname__

    if any("__setattr__" in vars(b) or "__slots__" in vars(b) for b in cls.__mro__[:-1]):
        raise TypeError(f"{cls.__name__}: __setattr__ or __slots__ (use dataclasses)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        n = len(args)
        if n > count:
            raise TypeError(f"{qualname}.__init__() takes {count + 1} positional arguments "
                            f"but {n + 1} were given")
        d = self.__dict__  # (no __setattr__ of its own: checked above)
        d.update(zip(fields, args))
        if n == count and not kwargs:
            return
        for name in fields[n:]:
            if name in kwargs:
                d[name] = kwargs.pop(name)
            elif name in defaults:
                d[name] = defaults[name]
            elif name in factories:
                d[name] = factories[name]()
            else:
                raise TypeError(f"{qualname}.__init__() missing 1 required positional "
                                f"argument: {name!r}")
        if kwargs:
            for name in fields[:n]:
                if name in kwargs:
                    raise TypeError(f"{qualname}.__init__() got multiple values for "
                                    f"argument {name!r}")
            raise TypeError(f"{qualname}.__init__() got an unexpected keyword argument "
                            f"{next(iter(kwargs))!r}")

    def __eq__(self, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (tuple(getattr(self, n) for n in fields)
                == tuple(getattr(other, n) for n in fields))

    def __repr__(self) -> str:
        return (f"{self.__class__.__qualname__}("
                + ", ".join(f"{n}={getattr(self, n)!r}" for n in fields) + ")")

    for name, fn in (("__init__", __init__), ("__eq__", __eq__), ("__repr__", __repr__)):
        if name not in cls.__dict__:
            fn.__qualname__ = f"{qualname}.{name}"
            setattr(cls, name, fn)
    own = cls.__dict__
    if not ("__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)):
        cls.__hash__ = None  # type: ignore[assignment]  (eq and not frozen: unhashable)
    cls._plain_fields = fields  # type: ignore[attr-defined]
    return cls
