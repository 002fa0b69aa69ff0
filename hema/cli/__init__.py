"""The command lines (console scripts hema-dataset, hema-train, hema-evaluate, hema-space) over the hema library.

What they share: user mistakes (HemaError) end as one line on stderr with exit status 2, never a
traceback; options can be generated from a dataclass's fields, so a parameter is declared once.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import sys
import typing
from collections.abc import Callable, Iterable

from hema.base.errors import HemaError


#: Failures of the machine, not of the program: a full disk or quota, a read-only or forbidden folder.
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def run(command: Callable[[argparse.Namespace], None], args: argparse.Namespace, *, interrupted: str) -> int:
    """Run a parsed command: 0 when it succeeds, HemaError (or a failure of the machine: a disk full
    or read-only) as one line and exit status 2, Ctrl-C as one line and 130."""
    try:
        command(args)
    except HemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        print(f"error: {exc.strerror}" + (f": {exc.filename}" if exc.filename else ""), file=sys.stderr)
        return HemaError.exit_code
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    return 0


def add_dataclass_arguments(parser: argparse.ArgumentParser, fields: Iterable[dataclasses.Field]) -> None:
    """One option per dataclass field (`val_size` -> `--val-size`), typed, defaulted and helped by the field."""
    for f in fields:
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        kind = f.type if isinstance(f.type, type) else _resolve(f)
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=f.default, help=f"{help_text} (default {f.default})")


def _resolve(f: dataclasses.Field) -> type:
    """The field's type when annotations are strings (from __future__ import annotations)."""
    return {"int": int, "float": float, "str": str, "bool": bool}[typing.cast(str, f.type)]
