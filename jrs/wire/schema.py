"""Value specs for the message schema: nested payloads described, bounded, checked.

Each spec checks one JSON value and returns a clean copy. Received messages
are checked leniently (unknown object keys are dropped, so a newer peer may
add some; a list marked `drop_bad` loses the items that do not fit); with
`strict` (what we send, under JRS_STRICT) an unknown key or a bad item is an
error, so the schema is held to what the code really sends. Every string has
a maximum length, every list and map a maximum count, and the nesting depth
is that of the schema itself: nothing a peer sends can make the checker (or
the handler after it) recurse, allocate or loop without bound.

A spec is a `Spec` instance, or (the older shorthand) a tuple of Python
types for a scalar field: `(int,)`, `(str, type(None))`.
"""

from __future__ import annotations

from typing import Any, Optional

from .errors import MessageError

MAX_INT = 2 ** 53
MAX_TEXT = 1 << 20


class Spec:
    """One JSON value's shape. `what` names it in error messages; `accepts` lists the
    JSON types it may take (OneOf picks its option by it, without trying each)."""

    what = "a value"
    accepts: tuple = (int, float, str, bool, type(None), list, dict)

    def check(self, value: Any, where: str, strict: bool) -> Any:
        raise NotImplementedError


class _Bad(MessageError):
    """A value that does not fit: `text` says why; `path` is filled in on the way out,
    so the happy path formats no names at all."""

    def __init__(self, text: str, path: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.path = path

    def within(self, segment: str) -> _Bad:
        if not self.path:
            self.path = segment
        elif self.path.startswith("["):
            self.path = segment + self.path
        else:
            self.path = f"{segment}.{self.path}"
        if self.text.startswith(("missing field", "fields not")):  # about the object
            self.args = (f"{self.path}: {self.text}",)
        else:
            self.args = (f"field {self.path!r} {self.text}",)
        return self


def _fail(where: str, text: str) -> MessageError:
    return _Bad(text)


def _unicode(value: str, where: str) -> None:
    """JSON's `\\ud800` escapes decode to lone surrogates, which are not text: every
    later encode (a log line, a file, a path, a hash) would raise on them."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise _fail(where, "is not valid unicode (a lone surrogate)") from None


class Int(Spec):
    what = "int"
    accepts = (int,)

    def __init__(self, lo: int = -MAX_INT, hi: int = MAX_INT, over: str = "") -> None:
        self.lo, self.hi = lo, hi
        self.over = over  # what a value above `hi` is told, if not "is out of range"

    def check(self, value: Any, where: str, strict: bool) -> Any:
        if type(value) is not int:  # bool is an int subclass: refused
            raise _fail(where, "must be int")
        if not self.lo <= value <= self.hi:
            raise _fail(where, self.over if self.over and value > self.hi
                        else "is out of range")
        return value


class Num(Spec):
    what = "number"
    accepts = (int, float)

    def __init__(self, lo: float = -MAX_INT, hi: float = MAX_INT) -> None:
        self.lo, self.hi = lo, hi

    def check(self, value: Any, where: str, strict: bool) -> Any:
        if type(value) not in (int, float):
            raise _fail(where, "must be number")
        if not self.lo <= value <= self.hi:  # NaN fails this too
            raise _fail(where, "is out of range")
        return value


class Str(Spec):
    what = "str"
    accepts = (str,)

    def __init__(self, max_len: int = MAX_TEXT) -> None:
        self.max_len = max_len

    def check(self, value: Any, where: str, strict: bool) -> Any:
        if type(value) is not str:
            raise _fail(where, "must be str")
        if len(value) > self.max_len:
            raise _fail(where, f"is too long (over {self.max_len} characters)")
        if not value.isascii():
            _unicode(value, where)
        return value


class Bool(Spec):
    what = "bool"
    accepts = (bool,)

    def check(self, value: Any, where: str, strict: bool) -> Any:
        if type(value) is not bool:
            raise _fail(where, "must be bool")
        return value


class _Null(Spec):
    what = "null"
    accepts = (type(None),)

    def check(self, value: Any, where: str, strict: bool) -> Any:
        if value is not None:
            raise _fail(where, "must be null")
        return None


Null = _Null()


class OneOf(Spec):
    """The first alternative that accepts the value."""

    def __init__(self, *options: Any) -> None:
        self.options = [spec(o) for o in options]
        self.what = " or ".join(o.what for o in self.options)

    def check(self, value: Any, where: str, strict: bool) -> Any:
        kind = type(value)
        for option in self.options:
            if kind in option.accepts:
                return option.check(value, where, strict)
        raise _fail(where, f"must be {self.what}")


class ListOf(Spec):
    """A list of at most `max_items` items of one spec. With `drop_bad`, a received item
    that does not fit is left out (for lists whose items are taken one by one)."""

    what = "a list"
    accepts = (list,)

    def __init__(self, item: Any, max_items: int = 100_000, drop_bad: bool = False) -> None:
        self.item = spec(item)
        self.max_items = max_items
        self.drop_bad = drop_bad

    def check(self, value: Any, where: str, strict: bool) -> Any:
        if type(value) is not list:
            raise _fail(where, "must be a list")
        if len(value) > self.max_items:
            raise _fail(where, f"has more than {self.max_items} items")
        check = self.item.check
        if self.drop_bad and not strict:
            out = []
            for v in value:
                try:
                    out.append(check(v, "", strict))
                except MessageError:
                    pass
            return out
        out = []
        for i, v in enumerate(value):
            try:
                out.append(check(v, "", strict))
            except _Bad as exc:
                raise exc.within(f"[{i}]") from None
        return out


class Tuple(Spec):
    """A list of fixed length, one spec per position (`[job, attempt]`)."""

    what = "a list"
    accepts = (list,)

    def __init__(self, *items: Any) -> None:
        self.items = [spec(i) for i in items]

    def check(self, value: Any, where: str, strict: bool) -> Any:
        if type(value) is not list or len(value) != len(self.items):
            raise _fail(where, f"must be a list of {len(self.items)}")
        out = []
        for i, (s, v) in enumerate(zip(self.items, value)):
            try:
                out.append(s.check(v, "", strict))
            except _Bad as exc:
                raise exc.within(f"[{i}]") from None
        return out


class Obj(Spec):
    """An object with known fields: {name: (spec, required)}."""

    what = "an object"
    accepts = (dict,)

    def __init__(self, fields: dict) -> None:
        self.fields = [(name, spec(s), bool(req)) for name, (s, req) in fields.items()]
        self.names = frozenset(fields)

    def check(self, value: Any, where: str, strict: bool) -> Any:
        if type(value) is not dict:
            raise _fail(where, "must be an object")
        return check_fields(value, self.fields, self.names, "", strict)


class MapOf(Spec):
    """An object used as a map: any keys of `key` shape, values of one spec."""

    what = "an object"
    accepts = (dict,)

    def __init__(self, key: Spec, value: Any, max_items: int = 10_000) -> None:
        self.key = key
        self.value = spec(value)
        self.max_items = max_items

    def check(self, value: Any, where: str, strict: bool) -> Any:
        if type(value) is not dict:
            raise _fail(where, "must be an object")
        if len(value) > self.max_items:
            raise _fail(where, f"has more than {self.max_items} entries")
        out = {}
        for k, v in value.items():
            try:
                self.key.check(k, "", strict)
                out[k] = self.value.check(v, "", strict)
            except _Bad as exc:
                raise exc.within(str(k)[:40]) from None
        return out


class _Types(Spec):
    """The older shorthand: a tuple of Python types for a scalar (or opaque) field."""

    _NAMES = {type(None): "null", dict: "an object", list: "a list", float: "number"}

    def __init__(self, types: tuple) -> None:
        self.types = types
        self.accepts = tuple(t for t in Spec.accepts if issubclass(t, types))
        self.allow_bool = bool in types
        self.what = " or ".join(self._NAMES.get(t, t.__name__) for t in types)

    def check(self, value: Any, where: str, strict: bool) -> Any:
        if (isinstance(value, bool) and not self.allow_bool) \
                or not isinstance(value, self.types):
            raise _fail(where, f"must be {self.what}")
        if isinstance(value, (int, float)) and not -MAX_INT <= value <= MAX_INT:
            raise _fail(where, "is out of range")
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                raise _fail(where, "is too long")
            if not value.isascii():
                _unicode(value, where)
        if isinstance(value, (dict, list)) and strict:
            raise _fail(where, "has no described shape (give it a Spec in SCHEMA)")
        return value


def spec(s: Any) -> Spec:
    """A Spec from a Spec or the tuple-of-types shorthand."""
    if isinstance(s, Spec):
        return s
    if isinstance(s, type):
        s = (s,)
    if isinstance(s, tuple) and all(isinstance(t, type) for t in s):
        fast = {(int,): Int, (str,): Str, (bool,): Bool}.get(s)
        return fast() if fast is not None else _Types(s)
    raise TypeError(f"not a value spec: {s!r}")


def check_fields(value: dict, fields: list, names: frozenset, where: Optional[str],
                 strict: bool) -> dict:
    """Check an object against [(name, spec, required)]; the clean copy."""
    out = {}
    for name, s, required in fields:
        if name in value:
            try:
                out[name] = s.check(value[name], name, strict)
            except _Bad as exc:
                raise exc.within(name) from None
        elif required:
            raise _Bad(f"missing field {name!r}") if where is not None else \
                MessageError(f"missing field {name!r}")
    if strict:
        extra = sorted(k for k in value if k not in names)
        if extra:
            text = f"fields not in the schema: {', '.join(map(str, extra))[:200]}"
            raise _Bad(text) if where is not None else MessageError(text)
    return out
