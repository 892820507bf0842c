def _sod_run_code():
    # Wrapper of POST /run_code (host/src/serve/run_code.rs), run as the "code" of the python
    # tool. It runs the request's program like 'python main.py < stdin' would: a fresh
    # __main__ namespace, its own stdin/stdout/stderr, and the return code CPython would
    # exit with. The user's streams go to private buffers; only this function writes to the
    # tool's output, once, after the program ended: one line, RESULT_MARKER + the run protocol's
    # record (_SodReport of sdk/judge-protocol/python/sod_run.py, which the server puts before
    # this file).
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
    report = _SodReport(marker)
    exit_status = _sod_exit_status
    b64decode = base64.b64decode
    saved = sys.stdin, sys.stdout, sys.stderr, sys.argv
    request = json.loads(b64decode(_sod_request).decode("utf-8"))

    out_sink, err_sink = _SodCapture(stream_cap), _SodCapture(stream_cap)
    out = io.TextIOWrapper(io.BufferedWriter(out_sink), encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(
        io.BufferedWriter(err_sink), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    stdin = io.TextIOWrapper(io.BytesIO(request["stdin"].encode("utf-8")), encoding="utf-8")
    source = request["code"]
    _sod_register_source(filename, source)
    namespace = {"__name__": "__main__", "__builtins__": builtins, "__doc__": None}
    return_code = 0
    sys.stdin, sys.stdout, sys.stderr, sys.argv = stdin, out, err, [filename]
    try:
        program = compile(source, filename, "exec", dont_inherit=True)
        exec(program, namespace)
    except SystemExit as e:
        return_code = exit_status(e) & 0xFF
        if not (e.code is None or isinstance(e.code, int)):
            try:
                err.write(f"{e.code}\n")
            except Exception:  # noqa: BLE001 - a closed or broken stream loses the message
                pass
        if return_code != 0:
            report.status = "runtime_error"
    except BaseException as e:  # noqa: BLE001 - everything the program raises is its stderr
        return_code = 1
        report.status = "memory_error" if isinstance(e, MemoryError) else "runtime_error"
        try:
            if isinstance(e, SyntaxError) and e.filename == filename and e.__traceback__.tb_next is None:
                report.status = "compile_error"
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

    notes = report.notes

    def text_of(sink, label):
        text = sink.value().decode("utf-8", "replace")
        if sink.dropped:
            notes.append(f"{label} truncated: {sink.dropped} byte(s) beyond {stream_cap} dropped")
        return text

    report.return_code = return_code
    report.stdout = text_of(out_sink, "stdout")
    report.stdout_bytes = out_sink.kept + out_sink.dropped
    report.stderr = text_of(err_sink, "stderr")
    # The result line must fit the tool's output cap: cut the longer stream until it does.
    # (Fetched files travel beside it: the sandbox reads them from the call's filesystem.)
    while report.size() > budget:
        size = report.size()
        key = "stdout" if len(report.stdout) >= len(report.stderr) else "stderr"
        text = getattr(report, key)
        cut = max(size - budget, 64)
        setattr(report, key, text[: max(len(text) - cut, 0)])
        note = f"{key} truncated to fit the response"
        if note not in notes:
            notes.append(note)
    report.send()


_sod_run_code()
