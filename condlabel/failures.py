"""A failure -> the command line's exit code and the one-line reason it prints last.

Errors raised inside Ray tasks and actors reach the driver wrapped (`RayTaskError(...)`,
`ActorDiedError`, Ray Data's `UserCodeException`), often with the original exception only in
their ANSI-coloured traceback text. `root_cause` digs the original out, so a storage error in
a read task still exits 3 and a missing extra in a labeler actor still names its `pip install`.

    0 success
    1 anything else
    2 bad configuration or arguments: a config problem, no input given, an input path that does
      not exist or a glob matching nothing, a path read as output that is none, a missing extra (`pip install ...`), a model
      directory without safetensors weights
    3 storage problem: unwritable output, unreadable input, unreachable endpoint
    4 run refused: another writer holds the output, or labelers would mix
    130 interrupted; 141 the reader of stdout went away (`| head`), quietly

Ray is not imported here: wrappers are recognised by their module name.
"""

from __future__ import annotations

import builtins
import importlib
import re
from dataclasses import dataclass

from condlabel.config import ConfigError
from condlabel.config.secrets import strip_userinfo
from condlabel.storage import StorageError
from condlabel.storage_errors import InputNotFound, NotAnOutput

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_STORAGE, EXIT_REFUSED = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
# What a Unix tool killed by SIGPIPE reports (128 + 13): the reader of stdout went away.
EXIT_PIPE_CLOSED = 141
INSTALL_HINT = "pip install"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# `pkg.mod.SomeError: message` at the start of a traceback line (frames are indented).
_EXCEPTION_LINE = re.compile(r"^(?P<name>(?:[A-Za-z_]\w*\.)*[A-Z]\w*): (?P<message>.*)$")
_CHAIN_LINES = ("The above exception was", "During handling of the above exception")
_MAX_REASON = 500


@dataclass(eq=False)
class RemoteError(Exception):
    """An exception known only from a Ray traceback text: its class name and message."""

    name: str
    message: str

    def __str__(self) -> str:
        return self.message


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def root_cause(exc: BaseException) -> BaseException:
    """`exc`, or for a Ray wrapper the exception that was raised in the task or actor."""
    texts = []
    seen: set[int] = set()
    while _is_ray(exc) and id(exc) not in seen:
        seen.add(id(exc))
        texts.append(strip_ansi(str(exc)))
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException):
            break
        exc = cause
    if not _is_ray(exc):
        return exc
    for text in texts:  # the outermost text holds the whole chain
        found = raised_exception_in(text)
        if found is not None:
            return _rebuilt(found)
    return exc


def _rebuilt(found: RemoteError) -> BaseException:
    """A config error known from its text as a `ConfigError` again, so it prints the same."""
    if _resolve(found.name) is not ConfigError:
        return found
    lines = [line.strip() for line in found.message.splitlines()[1:]]
    problems = [line[2:] for line in lines if line.startswith("- ")]
    return ConfigError(problems) if problems else found


def raised_exception_in(text: str) -> RemoteError | None:
    """The exception a task raised, from its traceback text: Python prints a chain cause first,
    so it is the last one printed, once Ray's own wrappers are skipped."""
    lines = text.splitlines()
    found = None
    for i, line in enumerate(lines):
        match = _EXCEPTION_LINE.match(line)
        if match is None or _is_ray_name(match["name"]):
            continue
        if not _looks_like_exception(match["name"]):
            continue
        message = [match["message"]]
        for more in lines[i + 1 :]:
            if not more.strip() or more.startswith(_CHAIN_LINES):
                break
            message.append(more)
        found = RemoteError(match["name"], "\n".join(message))
    return found


def exit_code(exc: BaseException) -> int:
    """The documented exit code of a failure (give it `root_cause(exc)`)."""
    kind = _exception_class(exc)
    if issubclass(kind, (ConfigError, InputNotFound, NotAnOutput)):
        return EXIT_CONFIG
    if issubclass(kind, StorageError):
        return EXIT_STORAGE
    if issubclass(kind, ImportError) and INSTALL_HINT in str(exc):
        return EXIT_CONFIG
    if _refused(kind):
        return EXIT_REFUSED
    return EXIT_FAILED


def reason(exc: BaseException) -> str:
    """The last line: what failed, on one line, without colours or credentials."""
    kind = _exception_class(exc)
    lines = [line.strip() for line in strip_ansi(str(exc)).splitlines() if line.strip()]
    if isinstance(exc, ConfigError):
        first = "; first" if len(exc.problems) > 1 else ""
        return _clip(
            f"error: invalid configuration ({len(exc.problems)} problem(s)){first}: "
            f"{exc.problems[0] if exc.problems else ''}"
        )
    # condlabel's own messages are written to be read whole; of another error (its traceback
    # is logged above) the first line says what it is.
    text = " ".join(lines)
    if issubclass(kind, StorageError):
        return _clip(f"error: {text}")
    if issubclass(kind, ConfigError):
        return _clip(f"error: invalid configuration: {text}")
    if _refused(kind):
        return _clip(f"error: run refused: {text}")
    if not isinstance(exc, RemoteError) and exit_code(exc) == EXIT_FAILED:
        text = (lines or [""])[0]
    name = exc.name.rsplit(".", 1)[-1] if isinstance(exc, RemoteError) else kind.__name__
    return _clip(f"error: {name}: {text}" if text else f"error: {name}")


def _clip(line: str) -> str:
    line = strip_userinfo(line)
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


def _refused(kind: type[BaseException]) -> bool:
    try:
        from condlabel.runs.runstate import RunRefused  # the conversion's, loaded when needed
    except Exception:  # noqa: BLE001 - a broken install must not hide the error being reported
        return False
    return issubclass(kind, RunRefused)


def _is_ray(exc: BaseException) -> bool:
    return _is_ray_name(type(exc).__module__)


def _is_ray_name(name: str) -> bool:
    """Ray's own modules and exceptions: wrappers around the cause, never the cause."""
    return name == "ray" or name.startswith(("ray.", "Ray"))


def _looks_like_exception(name: str) -> bool:
    kind = _resolve(name)
    if kind is not None:
        return not issubclass(kind, Warning)  # a "Warning: ..." line in a message is no error
    return name.endswith(("Error", "Exception", "Refused", "Interrupt"))


def _exception_class(exc: BaseException) -> type[BaseException]:
    if isinstance(exc, RemoteError):
        return _resolve(exc.name) or RemoteError
    return type(exc)


def _resolve(name: str) -> type[BaseException] | None:
    """The class a traceback names, looked up among builtins and condlabel's own modules only
    (nothing else is imported to read an error)."""
    module, _, short = name.rpartition(".")
    if not module:
        found = getattr(builtins, short, None)
    elif module == "condlabel" or module.startswith("condlabel."):
        try:
            found = getattr(importlib.import_module(module), short, None)
        except ImportError:
            return None
    else:
        return None
    return found if isinstance(found, type) and issubclass(found, BaseException) else None
