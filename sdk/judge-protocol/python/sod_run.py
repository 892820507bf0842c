# sod run protocol, Python side: how a program wrapped in the python tool reports what it did.
#
# A wrapper (the judge's harness, tools/judge/src/harness.py; POST /run_code's, host/serve/src/
# run_code.py) runs a program inside the python tool with private streams, then writes exactly one
# line to the tool's output: its tag, then one compact JSON object, the record below. The Rust side
# is sdk/judge-protocol/src/run.rs (RunRecord, parse_record), which finds the one line that starts
# with the tag. Wrappers prepend this file to their own source; it defines names only. The python
# tool itself (tools/python/sod_runner.py) imports its exit-status rule and source registration, so
# a program's status and tracebacks read the same in the tool's text and in a wrapper's record.
#
# No backticks and no at-signs may appear in this file: the python tool runs only the first fenced
# block of its code, and the run_code wrapper fills at-sign placeholders.


class _SodCapture(__import__("io").RawIOBase):
    """A program's stdout or stderr: keeps the first cap bytes written (all when cap is None) and
    counts the rest. Closing it (the program may close its streams) keeps what it holds."""

    def __init__(self, cap=None):
        super().__init__()
        self.cap = cap
        self.parts = []
        self.kept = 0
        self.dropped = 0

    def writable(self):
        return True

    def write(self, b):
        n = len(b)
        room = n if self.cap is None else self.cap - self.kept
        if n <= room:
            self.parts.append(bytes(b))
            self.kept += n
        else:
            if room > 0:
                self.parts.append(bytes(b[:room]))
                self.kept += room
            self.dropped += n - max(room, 0)
        return n

    def value(self):
        """The kept bytes."""
        return b"".join(self.parts)


def _sod_exit_status(exc):
    """The status CPython exits with on an uncaught SystemExit exc: 0 for no code, the code itself
    when it is an int, else 1 (CPython prints such a code to stderr). A process's status is its
    low byte: mask it (& 0xFF) for a return_code."""
    code = exc.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _sod_register_source(filename, source):
    """Makes source visible to tracebacks under filename."""
    import linecache

    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


class _SodReport:
    """The record of one wrapped run, and the one line that carries it.

    status: how the program ended: "ok", "compile_error", "runtime_error" (an uncaught exception,
        or SystemExit with a non-zero status), "memory_error" (MemoryError), "assertion_failed"
        (an assertion of a test program) or "bad_tests" (the test program does not compile).
    return_code: the status CPython would exit with, 0 to 255 (_sod_exit_status's, masked).
    stdout, stderr: what the program wrote (a wrapper may cut them to fit the tool's output cap).
    stdout_bytes: UTF-8 bytes of the whole stdout, cut or not.
    stdout_sha256: when the wrapper cut stdout, a SHA-256 (hex) of the whole of it as the wrapper
        defines; None (left out) otherwise.
    detail: the wrapper's account of a failure (a traceback's tail, a syntax error).
    notes: what the wrapper did to the streams (cuts), in words.

    Everything it needs to write the line is bound when it is made, before the program runs: the
    program may rebind module attributes, which then changes nothing.
    """

    def __init__(self, tag):
        import json
        import sys

        self.tag = tag
        self._write = sys.stdout.write
        self._dumps = json.dumps
        self.status = "ok"
        self.return_code = 0
        self.stdout = ""
        self.stdout_bytes = 0
        self.stdout_sha256 = None
        self.stderr = ""
        self.detail = ""
        self.notes = []

    def fields(self):
        record = {
            "status": self.status,
            "return_code": self.return_code,
            "stdout": self.stdout,
            "stdout_bytes": self.stdout_bytes,
            "stderr": self.stderr,
            "detail": self.detail,
            "notes": self.notes,
        }
        if self.stdout_sha256 is not None:
            record["stdout_sha256"] = self.stdout_sha256
        return record

    def encode(self, value):
        """value as it travels: compact JSON, non-ASCII kept as UTF-8."""
        return self._dumps(value, ensure_ascii=False, separators=(",", ":"))

    def size(self):
        """UTF-8 bytes of the record's JSON (the line less the tag and the newline)."""
        return len(self.encode(self.fields()).encode("utf-8"))

    def send(self):
        """Writes the line to the python tool's output."""
        self._write(self.tag + self.encode(self.fields()) + "\n")
