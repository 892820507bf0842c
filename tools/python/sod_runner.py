"""Runs model-written Python code and renders what it did as plain text.

This module is the pure core of the python tool: it has no dependency on WebAssembly or the
generated bindings and is tested natively (``python3 -m unittest discover tools/python/tests``).

Conventions (what a model sees):

* If the code contains a fenced block opened by three backticks and ``python`` (or ``py``),
  only the first such block is run.
* If the last statement is a bare expression whose text does not start with ``print``, its
  value is printed (with ``print``, so ``str()``), unless it is ``None``.
* The output is what the code wrote to stdout, then what it wrote to stderr, then the
  traceback of an uncaught exception. Tracebacks show only the frames of the user's code
  (cells and code given to ``exec``), at most :data:`MAX_TRACEBACK_FRAMES` of them; an
  exception that was being handled when the error occurred is shown only if it passed
  through user code (so the internals of libraries stay out of the way).
* Each stream is capped (:data:`OUTPUT_LIMIT_BYTES`, :data:`STDERR_LIMIT_BYTES`,
  :data:`TRACEBACK_LIMIT_BYTES`); past a cap the text is cut and
  :data:`TRUNCATION_MARKER` is appended, while the code keeps running.
* ``sys.exit()`` / ``sys.exit(0)`` end the code quietly; any other exit code is reported as
  ``SystemExit: <code>``.
"""

from __future__ import annotations

import ast
import builtins
import io
import linecache
import re
import sys
import traceback

# The Python-run rules every wrapper of this tool shares (sdk/judge-protocol/python/sod_run.py, put on the
# module path by build.sh): the exit status of a SystemExit, and how a cell's source reaches tracebacks.
from sod_run import _sod_exit_status, _sod_register_source

#: Bytes (UTF-8) of stdout kept per call; past it stdout is cut and marked.
OUTPUT_LIMIT_BYTES = 48 * 1024
#: Bytes (UTF-8) of stderr kept per call.
STDERR_LIMIT_BYTES = 4 * 1024
#: Bytes (UTF-8) of the rendered traceback kept per call (its head and its tail are kept).
TRACEBACK_LIMIT_BYTES = 8 * 1024
#: Frames of user code shown in a traceback; older frames are elided.
MAX_TRACEBACK_FRAMES = 10
#: Appended to a stream that was cut at its cap.
TRUNCATION_MARKER = "[output truncated]"
#: Upper bound of what :func:`run` returns, in bytes. It stays below the sod host's default
#: output limit (64 KiB), so a flood is cut here, with a marker the model can read, and the
#: call still ends ``ok`` instead of ``output_truncated``.
RESULT_LIMIT_BYTES = (
    OUTPUT_LIMIT_BYTES + STDERR_LIMIT_BYTES + TRACEBACK_LIMIT_BYTES + 3 * (len(TRUNCATION_MARKER) + 3)
)

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\r?\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_STARTS_WITH_PRINT = re.compile(r"print\b")


def extract_code(text: str) -> str:
    """Returns the first fenced python block of ``text``, or ``text`` itself if it has none.

    An unclosed fence runs to the end of the text.
    """
    match = _FENCE.search(text)
    return match.group(1) if match else text


def wit_safe(text: str) -> str:
    """Replaces lone surrogates, which a WIT ``string`` cannot carry, by backslash escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _cut_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``limit`` bytes."""
    return text.encode("utf-8", "backslashreplace")[:limit].decode("utf-8", "ignore")


class CappedWriter(io.TextIOBase):
    """A text stream that keeps at most ``limit`` UTF-8 bytes and drops the rest.

    Writes past the cap succeed (so the code keeps running) but are discarded;
    :attr:`truncated` tells whether anything was dropped.
    """

    def __init__(self, limit: int, name: str = "<captured>") -> None:
        super().__init__()
        self._limit = limit
        self._size = 0
        self._parts: list[str] = []
        self.truncated = False
        self.name = name

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "strict"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if self.truncated or not s:
            return len(s)
        data = s.encode("utf-8", "backslashreplace")
        room = self._limit - self._size
        if len(data) <= room:
            self._parts.append(s)
            self._size += len(data)
        else:
            self._parts.append(data[:room].decode("utf-8", "ignore"))
            self._size = self._limit
            self.truncated = True
        return len(s)

    def getvalue(self) -> str:
        """The kept text, with :data:`TRUNCATION_MARKER` on its own line if anything was dropped."""
        text = wit_safe("".join(self._parts))
        if self.truncated:
            if text and not text.endswith("\n"):
                text += "\n"
            text += TRUNCATION_MARKER + "\n"
        return text


def is_user_file(filename: str) -> bool:
    """Whether a traceback frame belongs to code the model wrote (a cell, or exec'd text)."""
    return filename.startswith("<") and not filename.startswith("<frozen")


def _filter_stacks(te: traceback.TracebackException) -> None:
    """Keeps only user frames (the last :data:`MAX_TRACEBACK_FRAMES`) in an exception chain."""
    seen: set[int] = set()
    todo = [te]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        frames = [f for f in cur.stack if is_user_file(f.filename)]
        elided = max(0, len(frames) - MAX_TRACEBACK_FRAMES)
        cur.stack = traceback.StackSummary.from_list(frames[elided:])
        cur._sod_elided = elided  # read by format_exception
        todo.append(cur.__cause__)
        todo.append(cur.__context__)
        todo.extend(getattr(cur, "exceptions", None) or [])


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_HEADER = "Traceback (most recent call last):\n"


def format_exception(exc: BaseException) -> str:
    """Renders ``exc`` like CPython does, with only the frames of user code.

    Chained exceptions (``raise ... from ...`` and exceptions raised while handling another)
    are rendered oldest first, as CPython does. Never raises: if rendering fails (for
    example under memory pressure) it falls back to ``Type: message``.
    """
    try:
        te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
        _filter_stacks(te)
        chain = []
        seen: set[int] = set()
        cur, joint = te, ""
        while cur is not None and id(cur) not in seen:
            seen.add(id(cur))
            chain.append((joint, cur))
            if cur.__cause__ is not None:
                cur, joint = cur.__cause__, _CAUSE
            elif (
                cur.__context__ is not None
                and not cur.__suppress_context__
                and cur.__context__.stack  # a library's internal exception: not shown
            ):
                cur, joint = cur.__context__, _CONTEXT
            else:
                cur = None
        parts = []
        for joint, cur in reversed(chain):
            text = "".join(cur.format(chain=False))
            elided = getattr(cur, "_sod_elided", 0)
            if elided and text.startswith(_HEADER):
                text = (
                    "Traceback (most recent call last; "
                    f"{elided} earlier frame(s) not shown):\n" + text[len(_HEADER):]
                )
            parts.append(text + joint)
        text = "".join(parts)
    except BaseException:  # noqa: BLE001 - a broken __str__ or a MemoryError must not escape
        try:
            text = f"{type(exc).__name__}: {exc}\n"
        except BaseException:  # noqa: BLE001
            text = f"{type(exc).__name__}\n"
    return _cut_middle(wit_safe(text), TRACEBACK_LIMIT_BYTES)


def _cut_middle(text: str, limit: int) -> str:
    """Keeps the head and the tail of ``text`` within ``limit`` bytes, marking the cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    half = limit // 2
    head = data[:half].decode("utf-8", "ignore")
    tail = data[-half:].decode("utf-8", "ignore")
    return f"{head}\n{TRUNCATION_MARKER}\n{tail}"


def compile_cell(source: str, filename: str):
    """Compiles ``source`` into ``(body, last)`` code objects.

    ``last`` is the final bare expression (evaluated and printed), or ``None``.
    Raises ``SyntaxError`` for invalid code.
    """
    tree = ast.parse(source, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        segment = ast.get_source_segment(source, tree.body[-1]) or ""
        if not _STARTS_WITH_PRINT.match(segment):
            expr = tree.body.pop()
            last = compile(ast.Expression(expr.value), filename, "eval", dont_inherit=True)
    body = compile(tree, filename, "exec", dont_inherit=True)
    return body, last


def new_namespace() -> dict:
    """A fresh global namespace for user code, like the one of a script's ``__main__``."""
    return {"__name__": "__main__", "__builtins__": builtins, "__doc__": None}


def register_source(filename: str, source: str) -> None:
    """Makes ``source`` visible to tracebacks under ``filename``."""
    _sod_register_source(filename, source)


def forget_source(filename: str) -> None:
    """Undoes :func:`register_source`."""
    linecache.cache.pop(filename, None)


def run(code: str, namespace: dict, filename: str = "<cell 1>") -> str:
    """Runs ``code`` in ``namespace`` and returns the rendered output (see the module doc).

    ``filename`` names the cell in tracebacks; its source stays registered so that functions
    defined here show their lines when called from a later cell of the same session.
    """
    source = extract_code(code)
    out = CappedWriter(OUTPUT_LIMIT_BYTES, "<stdout>")
    err = CappedWriter(STDERR_LIMIT_BYTES, "<stderr>")
    error_text = ""
    saved = sys.stdout, sys.stderr
    register_source(filename, source)
    sys.stdout, sys.stderr = out, err
    try:
        body, last = compile_cell(source, filename)
        exec(body, namespace)
        if last is not None:
            value = eval(last, namespace)
            if value is not None:
                print(value)
    except SystemExit as e:
        # Quiet when CPython would exit with status 0; otherwise shown as CPython shows it (a string code
        # itself, any other code as ``SystemExit: <code>``).
        if _sod_exit_status(e) != 0:
            error_text = f"{e.code}\n" if isinstance(e.code, str) else f"SystemExit: {e.code}\n"
    except BaseException as e:  # noqa: BLE001 - everything the user code raises is output
        error_text = format_exception(e)
        e.__traceback__ = None  # drop frames (and the memory they hold) now
    finally:
        sys.stdout, sys.stderr = saved
    return render(out.getvalue(), err.getvalue(), error_text)


def render(stdout: str, stderr: str, error: str) -> str:
    """Joins stdout, stderr and the traceback, each starting on a new line."""
    text = ""
    for part in (stdout, stderr, error):
        if not part:
            continue
        if text and not text.endswith("\n"):
            text += "\n"
        text += part
    return text
