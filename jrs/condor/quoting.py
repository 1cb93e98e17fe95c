"""`arguments` and `environment`, in HTCondor's old and new quoting syntax.

New syntax (the value is wrapped in double quotes): `""` is a literal `"`,
words are separated by whitespace, single quotes group, and `''` inside them
is a literal `'`. Old syntax: arguments split on whitespace with `\\"` for a
literal `"` (a bare `"` is an error); environment is `NAME=VALUE;NAME=VALUE`.
"""

from __future__ import annotations

from .errors import SubmitError

_WS = " \t\r\n"


def _unquote_v2(value: str, what: str) -> str:
    """Strip the outer double quotes of new syntax and undo `""`."""
    out = []
    i, n = 1, len(value)
    while i < n:
        c = value[i]
        if c == '"':
            if i + 1 < n and value[i + 1] == '"':
                out.append('"')
                i += 2
                continue
            if value[i + 1:].strip(_WS):
                raise SubmitError(
                    "Unexpected characters following double-quote.  Did you forget to escape "
                    "the double-quote by repeating it?  Here is the quote and trailing "
                    f"characters: {value[i:]}  (in {what} {value})")
            return "".join(out)
        out.append(c)
        i += 1
    raise SubmitError(f"Unterminated double-quote in {what}: {value}")


def split_v2(raw: str, what: str) -> list[str]:
    """Words of a new-syntax string (after `""` is undone)."""
    args: list[str] = []
    buf: list[str] = []
    token = False
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == "'":
            start = i
            i += 1
            token = True
            while True:
                if i >= n:
                    raise SubmitError(f"Unbalanced quote starting here: {raw[start:]} "
                                      f"(in {what})")
                if raw[i] == "'":
                    if i + 1 < n and raw[i + 1] == "'":
                        buf.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(raw[i])
                i += 1
        elif c in _WS:
            i += 1
            if token:
                args.append("".join(buf))
                buf = []
                token = False
        else:
            buf.append(c)
            token = True
            i += 1
    if token:
        args.append("".join(buf))
    return args


def parse_arguments(value: str) -> list[str]:
    """The argv (without argv[0]) that `arguments = value` gives the program."""
    if value.startswith('"'):
        return split_v2(_unquote_v2(value, "arguments"), "arguments")
    if '"' not in value:
        return value.split()  # old syntax without quotes: nothing to undo
    out = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "\\" and i + 1 < n and value[i + 1] == '"':
            out.append('"')
            i += 2
            continue
        if c == '"':
            raise SubmitError(f"Found illegal unescaped double-quote: {value[i:]} "
                              f"(the full arguments were: {value})")
        out.append(c)
        i += 1
    return "".join(out).split()


def _add_env(env: dict, entry: str, value: str) -> None:
    name, eq, val = entry.partition("=")
    if not eq:
        raise SubmitError(f"Missing '=' after environment variable '{entry}' "
                          f"(the environment was: {value})")
    if not name:
        raise SubmitError(f"missing variable in '{entry}' (the environment was: {value})")
    env[name] = val


def parse_environment(value: str) -> dict:
    """The variables `environment = value` sets (later entries win)."""
    env: dict = {}
    if value.startswith('"'):
        for word in split_v2(_unquote_v2(value, "environment"), "environment"):
            _add_env(env, word, value)
        return env
    for entry in value.replace("\n", ";").split(";"):
        entry = entry.lstrip(_WS)
        if entry:
            _add_env(env, entry, value)
    return env
