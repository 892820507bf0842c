"""sod judge harness: runs one test of a candidate program inside the python tool.

The judge (tools/judge/src/harness.rs) puts the run protocol's Python side (sdk/judge-protocol/
python/sod_run.py) before this file and appends one call, ``_sod_judge(tag, mode, solution, tests,
stdin)``, whose text arguments are base64, and runs the whole as the ``code`` of a fresh python tool
instance. The candidate runs in a namespace of its own, with its own stdin, stdout and stderr; the
harness then writes exactly one line to the tool's output, the run protocol's record
(``_SodReport``) after ``tag``. Its ``stderr`` stays empty (the candidate's is discarded); its
``stdout`` is what the candidate printed (stdin mode only), cut to fit the python tool's output cap;
when it was cut, ``stdout_sha256`` is the SHA-256 of the whole output after :func:`normalize`.

The expected output never enters this interpreter: the judge compares outside it.
"""


def _sod_judge(tag, mode, solution_b64, tests_b64, stdin_b64):
    import base64
    import builtins
    import hashlib
    import io
    import sys
    import traceback

    # Everything the epilogue needs is bound now, before candidate code can replace module
    # attributes or the run protocol's names. The record goes to the python tool's own output.
    report = _SodReport(tag)
    capture = _SodCapture
    exit_status = _sod_exit_status
    register = _sod_register_source
    sha256 = hashlib.sha256
    text_io = io.TextIOWrapper
    bytes_io = io.BytesIO
    string_io = io.StringIO
    base_exception = BaseException
    system_exit = SystemExit
    assertion_error = AssertionError
    memory_error = MemoryError
    saved_stdin = sys.stdin
    # Bytes of the JSON-encoded `stdout` field; keeps the record under the tool's 48 KiB stdout cap.
    stdout_field_limit = 32 * 1024
    detail_limit = 4000

    def decode(b64):
        return base64.b64decode(b64).decode("utf-8")

    def clean(text):
        # A WIT string (and JSON) cannot carry lone surrogates.
        return text.encode("utf-8", "replace").decode("utf-8")

    def normalize(text):
        # Mirrors compare::normalize in the judge: LF line ends, no trailing blanks, no
        # trailing empty lines.
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        lines = [line.rstrip(" \t\x0b\x0c") for line in lines]
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join(lines)

    def innermost_file(exc):
        tb = exc.__traceback__
        if tb is None:
            return None
        while tb.tb_next is not None:
            tb = tb.tb_next
        return tb.tb_frame.f_code.co_filename

    def describe(exc):
        try:
            te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
            te.stack = traceback.StackSummary.from_list(
                [frame for frame in te.stack if frame.filename != "<code>"]
            )
            text = "".join(te.format())
        except base_exception:  # a broken __str__, or no memory left to format
            try:
                text = f"{type(exc).__name__}: {exc}\n"
            except base_exception:
                text = f"{type(exc).__name__}\n"
        return clean(text[-detail_limit:])

    def describe_syntax(exc):
        try:
            text = "".join(traceback.format_exception_only(type(exc), exc))
        except base_exception:
            text = f"{type(exc).__name__}\n"
        return clean(text[-detail_limit:])

    solution = decode(solution_b64)
    tests = decode(tests_b64) if mode == "program" else None
    input_bytes = base64.b64decode(stdin_b64)

    status, detail = "ok", ""
    # The status CPython would exit with when the run does not end "ok".
    return_code = 1
    if tests is not None:
        try:
            tests_code = compile(tests, "<tests>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            status, detail = "bad_tests", describe_syntax(exc)
    if status == "ok":
        try:
            solution_code = compile(solution, "<solution>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            status, detail = "compile_error", describe_syntax(exc)

    sink = capture()
    if status == "ok":
        register("<solution>", solution)
        if tests is not None:
            register("<tests>", tests)

        def fresh_stdin(mode="r", *args, **kwargs):
            raw = bytes_io(input_bytes)
            return raw if "b" in mode else text_io(raw, encoding="utf-8", newline="\n")

        real_open = builtins.open

        def judge_open(file, mode="r", *args, **kwargs):
            # `open(0)` reads standard input, as on a real machine.
            if file == 0:
                return fresh_stdin(mode)
            return real_open(file, mode, *args, **kwargs)

        candidate_builtins = dict(builtins.__dict__)
        candidate_builtins["open"] = judge_open
        namespace = {"__name__": "__main__", "__builtins__": candidate_builtins, "__doc__": None}
        stdout = text_io(sink, encoding="utf-8", errors="backslashreplace", newline="\n",
                         write_through=True)
        sys.stdin = fresh_stdin()
        sys.stdout = stdout
        sys.stderr = string_io()
        phase = "solution"
        try:
            exec(solution_code, namespace)
            if tests is not None:
                phase = "tests"
                exec(tests_code, namespace)
        except system_exit as exc:
            status_code = exit_status(exc)
            return_code = status_code & 0xFF
            if tests is not None and not (phase == "tests" and innermost_file(exc) == "<tests>"):
                status, detail = "runtime_error", "the program exited before its tests finished\n"
            elif status_code != 0:
                status, detail = "runtime_error", f"the program exited with status {status_code}\n"
        except base_exception as exc:
            if isinstance(exc, memory_error):
                status = "memory_error"
            elif (
                tests is not None
                and phase == "tests"
                and isinstance(exc, assertion_error)
                and innermost_file(exc) == "<tests>"
            ):
                status = "assertion_failed"
            else:
                status = "runtime_error"
            detail = describe(exc)
            exc.__traceback__ = None
        finally:
            # Late writes (from __del__ methods, say) go nowhere; the record has its own stream.
            sys.stdin = saved_stdin
            sys.stdout = string_io()
            sys.stderr = string_io()
        try:
            stdout.flush()
        except base_exception:  # the candidate closed or broke its stdout
            pass

    report.status, report.detail = status, detail
    report.return_code = 0 if status == "ok" else return_code
    if mode == "stdin":
        printed = clean(sink.value().decode("utf-8", "replace"))
        report.stdout_bytes = len(printed.encode("utf-8"))
        shown = printed[:stdout_field_limit]
        while len(report.encode(shown).encode("utf-8")) > stdout_field_limit:
            shown = shown[: len(shown) // 2]
        report.stdout = shown
        if shown != printed:
            report.stdout_sha256 = sha256(normalize(printed).encode("utf-8")).hexdigest()
    report.send()
