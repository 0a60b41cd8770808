"""Type checks of the public functions' arguments: one clear ConfigError instead of a raw TypeError."""

from __future__ import annotations

from os import PathLike

from .errors import ConfigError


def check_args(function: str, **args: tuple[object, tuple[type, ...], bool]) -> None:
    """Refuse an argument of the wrong type: ``name=(value, accepted types, None allowed)``.

    Raises
    ------
    ConfigError
        The first bad argument, named with its value and the types it accepts.
    """
    for name, (value, types, optional) in args.items():
        if value is None and optional:
            continue
        ok = isinstance(value, types) and not isinstance(value, bool)
        if ok and isinstance(value, (list, tuple)):
            ok = all(isinstance(v, str) for v in value)
        if ok and isinstance(value, int):
            ok = value >= 1
        if not ok:
            accepted = " or ".join(_TYPE_NAMES[t] for t in types) + (" or None" if optional else "")
            raise ConfigError(f"{function}: {name}={value!r} must be {accepted} (got {type(value).__name__})")


_TYPE_NAMES = {str: "a string", PathLike: "a path", list: "a list of strings", tuple: "a tuple of strings", int: "a positive integer"}
