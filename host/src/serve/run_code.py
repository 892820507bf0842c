def _sod_run_code():
    # Wrapper of POST /run_code (host/src/serve/run_code.rs), run as the "code" of the python
    # tool. It runs the request's program like 'python main.py < stdin' would: a fresh
    # __main__ namespace, its own stdin/stdout/stderr, and the return code CPython would
    # exit with. The user's streams go to private buffers; only this function writes to the
    # tool's output, once, after the program ended: one line, RESULT_MARKER + JSON.
    # The request is the global _sod_request, the base64 of a JSON object, so no text of the
    # request can look like a fenced code block to the tool. No backticks may appear in this
    # file for the same reason. The server compiles this file once, in the tool itself, and
    # sends the marshalled code object with every request (compiling it costs ~5x running it).
    import base64, builtins, io, json, linecache, sys, traceback

    marker = "@RESULT_MARKER@"
    budget = @RESULT_BUDGET@
    stream_cap = @STREAM_CAP@
    filename = "main.py"
    # Everything used after the program ran is bound now: the program may rebind module
    # attributes, which only ever changes its own response.
    emit = sys.stdout.write
    dumps, b64decode = json.dumps, base64.b64decode
    saved = sys.stdin, sys.stdout, sys.stderr, sys.argv
    request = json.loads(b64decode(_sod_request).decode("utf-8"))

    def finish(result):
        text = dumps(result, ensure_ascii=False, separators=(",", ":"))
        emit(marker + text + "\n")

    class Sink(io.RawIOBase):
        """Keeps the first stream_cap bytes written and counts the rest."""

        def __init__(self):
            super().__init__()
            self.parts = []
            self.kept = 0
            self.dropped = 0

        def writable(self):
            return True

        def write(self, b):
            n = len(b)
            room = stream_cap - self.kept
            if n <= room:
                self.parts.append(bytes(b))
                self.kept += n
            else:
                if room > 0:
                    self.parts.append(bytes(b[:room]))
                    self.kept = stream_cap
                self.dropped += n - max(room, 0)
            return n

    out_sink, err_sink = Sink(), Sink()
    out = io.TextIOWrapper(io.BufferedWriter(out_sink), encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(
        io.BufferedWriter(err_sink), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    stdin = io.TextIOWrapper(io.BytesIO(request["stdin"].encode("utf-8")), encoding="utf-8")
    source = request["code"]
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": "__main__", "__builtins__": builtins, "__doc__": None}
    return_code = 0
    sys.stdin, sys.stdout, sys.stderr, sys.argv = stdin, out, err, [filename]
    try:
        program = compile(source, filename, "exec", dont_inherit=True)
        exec(program, namespace)
    except SystemExit as e:
        code = e.code
        if code is None:
            return_code = 0
        elif isinstance(code, int):
            return_code = code & 0xFF
        else:
            return_code = 1
            try:
                err.write(f"{code}\n")
            except Exception:  # noqa: BLE001 - a closed or broken stream loses the message
                pass
    except BaseException as e:  # noqa: BLE001 - everything the program raises is its stderr
        return_code = 1
        try:
            if isinstance(e, SyntaxError) and e.filename == filename and e.__traceback__.tb_next is None:
                lines = traceback.format_exception_only(type(e), e)
            else:
                # The first frame is this wrapper's exec: not part of the program.
                lines = traceback.format_exception(type(e), e, e.__traceback__.tb_next)
            text = "".join(lines)
        except BaseException:  # noqa: BLE001 - a broken __str__ or a MemoryError
            text = f"{type(e).__name__}\n"
        e.__traceback__ = None
        err_sink.write(text.encode("utf-8", "backslashreplace"))
    finally:
        sys.stdin, sys.stdout, sys.stderr, sys.argv = saved
    for stream in (out, err):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - closed by the program: close() already flushed it
            pass
    linecache.cache.pop(filename, None)

    notes = []

    def text_of(sink, label):
        text = b"".join(sink.parts).decode("utf-8", "replace")
        if sink.dropped:
            notes.append(f"{label} truncated: {sink.dropped} byte(s) beyond {stream_cap} dropped")
        return text

    result = {
        "stdout": text_of(out_sink, "stdout"),
        "stderr": text_of(err_sink, "stderr"),
        "return_code": return_code,
        "notes": notes,
    }
    # The result line must fit the tool's output cap: cut the longer stream until it does.
    # (Fetched files travel beside it: the sandbox reads them from the call's filesystem.)
    while len(dumps(result, ensure_ascii=False, separators=(",", ":")).encode("utf-8")) > budget:
        size = len(dumps(result, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        key = "stdout" if len(result["stdout"]) >= len(result["stderr"]) else "stderr"
        cut = max(size - budget, 64)
        result[key] = result[key][: max(len(result[key]) - cut, 0)]
        note = f"{key} truncated to fit the response"
        if note not in notes:
            notes.append(note)
    finish(result)


_sod_run_code()
