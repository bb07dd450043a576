"""The door of every command: flags and files checked once, before any work; bad input is one line and exit 2.

Every command line of gpuprobe (`python -m analysis ...`, `python -m probes.*`) parses with `ArgumentParser`
(argparse, but its errors are one line: `prog: error: argument --tp: must be at least 1`), types its values
with the checkers below (finite, positive, lists of positive integers, files that can be read, outputs that
can be written), and runs inside `guard()`, which turns the input errors of the whole house (`BadInput` and
its subclasses: a bad run document, config.json, bench.toml, claims file, ...), an unreadable or unwritable
file and Ctrl-C into one line on stderr and exit 2 (128 + the signal for Ctrl-C: 130), never a traceback.

    python -m analysis project --gpu l40s --model llama-3.1-8b --batch 1,,8   # error: ... exit 2
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

EXIT_BAD_INPUT = 2


class BadInput(ValueError):
    """Input a user can fix (a flag, a file, a config value): one line naming it, and exit 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (`prog: error: ...`, exit 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def finite_float(text: str) -> float:
    v = _number(text)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
    return v


def bounded(parse: Callable[[str], Any], ok: Callable[[Any], bool], why: str) -> Callable[[str], Any]:
    """An argparse type: `parse`, then refuse a value `ok` rejects with "'TEXT': why"."""

    def check(text: str) -> Any:
        value = parse(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r}: {why}")
        return value

    return check


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


positive_float = bounded(finite_float, lambda v: v > 0, "must be greater than 0")
nonneg_float = bounded(finite_float, lambda v: v >= 0, "must be 0 or more")
percent = bounded(nonneg_float, lambda v: v <= 100, "a percentage is 0..100")  # above 100 no drop counts
positive_int = bounded(_int, lambda v: v >= 1, "must be at least 1")
nonneg_int = bounded(_int, lambda v: v >= 0, "must be 0 or more")


def int_list(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]: positive integers, at least one, no empty items."""
    items = [s.strip() for s in text.split(",")]
    if not text.strip() or any(not s for s in items):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive integers, e.g. 1,8,32")
    values = [_int(s) for s in items]
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be at least 1")
    return values


def word(text: str) -> str:
    """A value that must not be empty (an empty --device or --out is a mistake, not a request for the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def input_file(text: str) -> Path:
    """A file that exists, is a regular file and can be read."""
    p = Path(text)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, not a file")
    if not os.access(p, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: not readable")
    return p


def read_text(path: str | Path, what: str = "file") -> str:
    """A text input read whole: a missing file, a folder, an unreadable file or bytes that are not UTF-8 text
    (a binary, a latin-1 file) is a BadInput naming the file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{p}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{p}: is a folder, not a {what}") from None
    except OSError as exc:
        raise BadInput(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{p}: not a {what} (not UTF-8 text: byte {exc.start})") from None


def check_output_file(path: Path, suffixes: tuple[str, ...] = ()) -> Path:
    """A file that can be written: its folder is made if missing; a folder in its place, a file where its
    folder should be, a read-only folder or an unsupported suffix is a BadInput."""
    if path.is_dir():
        raise BadInput(f"{path}: is a folder; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise BadInput(f"{path}: the file name should end in {', '.join(suffixes)}")
    check_output_dir(path.parent, what=f"{path}: its folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise BadInput(f"{path}: not writable")
    return path


def check_output_dir(path: Path, what: str = "") -> Path:
    """A folder that can be written into, made if missing."""
    what = what or str(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BadInput(f"{what} {path} is a file, not a folder") from None
    except NotADirectoryError:
        raise BadInput(f"{what}: a file stands where a folder of {path} should be") from None
    except OSError as exc:
        raise BadInput(f"{what}: cannot create {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise BadInput(f"{what}: folder {path} is not writable")
    return path


def guard(fn: Callable[[], int], extra: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command's body: bad input (BadInput, `extra`, an OSError on a file) is one line on stderr and
    exit 2; Ctrl-C is one line and 130. Anything else is a bug and keeps its traceback."""
    try:
        return fn()
    except (BadInput, *extra) as exc:
        return _fail(str(exc.args[0]) if exc.args else str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        return _fail(f"input is not UTF-8 text ({exc.reason} at byte {exc.start})")
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP under probes.interrupt.as_interrupts
        signum = getattr(exc, "signum", 2)
        print(f"interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum


def _fail(message: Any) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT
