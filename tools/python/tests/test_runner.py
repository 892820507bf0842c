"""Native tests of the python tool's pure logic (sod_runner) and of the guest SDK (sod_tool).

Run from the repository root with ``python3 -m unittest discover tools/python/tests``. They need
no WebAssembly runtime; the component itself is tested through the host in tests/python.rs.
"""

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [
    str(ROOT / "tools" / "python"),
    str(ROOT / "sdk" / "python"),
    str(ROOT / "sdk" / "judge-protocol" / "python"),
]

import sod_runner  # noqa: E402
import sod_tool  # noqa: E402


def run(code: str, namespace=None, filename="<code>") -> str:
    return sod_runner.run(code, namespace if namespace is not None else sod_runner.new_namespace(), filename)


class ExtractCode(unittest.TestCase):
    def test_plain_code_is_returned_unchanged(self):
        self.assertEqual(sod_runner.extract_code("print(1)\n"), "print(1)\n")

    def test_first_python_block_wins(self):
        text = "Let me compute.\n```python\nprint(5)\n```\nthen\n```python\nprint(6)\n```"
        self.assertEqual(sod_runner.extract_code(text), "print(5)\n")

    def test_py_and_case_variants(self):
        self.assertEqual(sod_runner.extract_code("```py\nx=1\n```"), "x=1\n")
        self.assertEqual(sod_runner.extract_code("```Python3 \nx=2\n```"), "x=2\n")

    def test_other_languages_are_not_extracted(self):
        text = "```bash\nls\n```"
        self.assertEqual(sod_runner.extract_code(text), text)

    def test_unclosed_fence_runs_to_the_end(self):
        self.assertEqual(sod_runner.extract_code("```python\nprint(7)\n"), "print(7)\n")


class LastExpression(unittest.TestCase):
    def test_bare_expression_is_printed(self):
        self.assertEqual(run("x = 6\nx * 7"), "42\n")

    def test_print_is_not_printed_twice(self):
        self.assertEqual(run("print(3)"), "3\n")
        self.assertEqual(run("x = 1\nprint (x)"), "1\n")

    def test_none_is_not_printed(self):
        self.assertEqual(run("l = [2, 1]\nl.sort()"), "")

    def test_str_form_is_used(self):
        self.assertEqual(run("'a' + 'b'"), "ab\n")

    def test_expression_inside_a_block_is_not_printed(self):
        self.assertEqual(run("for i in range(3):\n    i"), "")

    def test_multiline_expression(self):
        self.assertEqual(run("sum([\n 1,\n 2,\n])"), "3\n")

    def test_assignment_last_prints_nothing(self):
        self.assertEqual(run("x = 5"), "")

    def test_fenced_block_with_last_expression(self):
        self.assertEqual(run("Compute:\n```python\na = 2\na ** 10\n```\n"), "1024\n")


class Errors(unittest.TestCase):
    def test_traceback_shows_user_frames_and_source(self):
        out = run("def f(d):\n    return d['k']\nf({})")
        # Caret lines under the source differ between CPython versions: compare without them.
        lines = [line for line in out.splitlines(True) if set(line.strip()) - set("~^")]
        self.assertEqual(
            "".join(lines),
            "Traceback (most recent call last):\n"
            '  File "<code>", line 3, in <module>\n'
            "    f({})\n"
            '  File "<code>", line 2, in f\n'
            "    return d['k']\n"
            "KeyError: 'k'\n",
        )

    def test_stdout_comes_before_the_traceback(self):
        out = run("print('before')\n1/0")
        self.assertTrue(out.startswith("before\nTraceback"), out)
        self.assertTrue(out.endswith("ZeroDivisionError: division by zero\n"), out)

    def test_library_frames_are_hidden(self):
        out = run("import json\njson.loads('{')")
        self.assertIn('File "<code>", line 2', out)
        self.assertNotIn("json/decoder.py", out)
        self.assertIn("JSONDecodeError", out)

    def test_syntax_error(self):
        out = run("x = (1,")
        self.assertIn('File "<code>", line 1', out)
        self.assertIn("SyntaxError", out)
        self.assertNotIn("Traceback", out)

    def test_explicit_cause_is_shown(self):
        out = run("try:\n    1/0\nexcept Exception as e:\n    raise ValueError('bad') from e")
        self.assertIn("ZeroDivisionError", out)
        self.assertIn("direct cause", out)
        self.assertTrue(out.endswith("ValueError: bad\n"), out)

    def test_deep_recursion_is_elided(self):
        limit = sys.getrecursionlimit()
        try:
            sys.setrecursionlimit(300)
            out = run("def f(n):\n    return f(n + 1)\nf(0)")
        finally:
            sys.setrecursionlimit(limit)
        self.assertIn("earlier frame(s) not shown", out)
        self.assertLessEqual(out.count('File "<code>"'), sod_runner.MAX_TRACEBACK_FRAMES)
        self.assertTrue(out.endswith("RecursionError: maximum recursion depth exceeded\n"), out)

    def test_stderr_is_kept(self):
        self.assertEqual(run("import sys\nprint('o')\nprint('e', file=sys.stderr)"), "o\ne\n")

    def test_sys_exit(self):
        self.assertEqual(run("import sys\nprint(1)\nsys.exit(0)\nprint(2)"), "1\n")
        self.assertEqual(run("import sys\nsys.exit(3)"), "SystemExit: 3\n")
        self.assertEqual(run("import sys\nsys.exit('bye')"), "bye\n")
        # The status rule of sod_run: False is 0, so quiet; None is 0; a non-int, non-str code is status 1.
        self.assertEqual(run("import sys\nsys.exit(False)\nprint(2)"), "")
        self.assertEqual(run("raise SystemExit(None)"), "")
        self.assertEqual(run("raise SystemExit([1])"), "SystemExit: [1]\n")

    def test_streams_are_restored(self):
        before = sys.stdout, sys.stderr
        run("import sys\nsys.stdout = None\n1/0")
        self.assertEqual((sys.stdout, sys.stderr), before)

    def test_broken_exception_str_does_not_escape(self):
        out = run("class E(Exception):\n    def __str__(self):\n        raise RuntimeError\nraise E()")
        self.assertIn("E", out)


class Limits(unittest.TestCase):
    def test_stdout_is_capped_with_marker(self):
        out = run("for i in range(100000):\n    print('x' * 99)")
        self.assertTrue(out.endswith("\n" + sod_runner.TRUNCATION_MARKER + "\n"), out[-100:])
        kept = out[: -len(sod_runner.TRUNCATION_MARKER) - 1]
        self.assertLessEqual(len(kept.encode()), sod_runner.OUTPUT_LIMIT_BYTES + 1)
        self.assertGreater(len(kept.encode()), sod_runner.OUTPUT_LIMIT_BYTES - 100)

    def test_code_keeps_running_after_the_cap(self):
        out = run("import sys\nprint('y' * 200000)\nprint('done', file=sys.stderr)")
        self.assertTrue(out.endswith(sod_runner.TRUNCATION_MARKER + "\ndone\n"), out[-60:])

    def test_cap_respects_utf8_boundaries(self):
        w = sod_runner.CappedWriter(5)
        w.write("ééé")  # 6 bytes
        self.assertTrue(w.truncated)
        self.assertEqual(w.getvalue(), "éé\n" + sod_runner.TRUNCATION_MARKER + "\n")

    def test_lone_surrogates_are_escaped(self):
        self.assertEqual(run("print('a\\ud800b')"), "a\\ud800b\n")

    def test_result_stays_under_the_bound(self):
        self.assertLess(sod_runner.RESULT_LIMIT_BYTES, 64 * 1024)
        out = run("import sys\nprint('o' * 10**6)\nsys.stderr.write('e' * 10**6)\n"
                  "raise ValueError('v' * 10**6)")
        self.assertLessEqual(len(out.encode()), sod_runner.RESULT_LIMIT_BYTES)
        self.assertEqual(out.count(sod_runner.TRUNCATION_MARKER), 3)

    def test_huge_exception_message_keeps_head_and_tail(self):
        out = run("raise ValueError('v' * 100000 + 'END')")
        self.assertLessEqual(len(out.encode()), sod_runner.TRACEBACK_LIMIT_BYTES + 100)
        self.assertIn(sod_runner.TRUNCATION_MARKER, out)
        self.assertTrue(out.startswith("Traceback"), out[:40])
        self.assertTrue(out.endswith("END\n"), out[-20:])


class Namespaces(unittest.TestCase):
    def test_namespace_persists_when_reused(self):
        ns = sod_runner.new_namespace()
        run("x = 41", ns, "<cell 1>")
        self.assertEqual(run("x + 1", ns, "<cell 2>"), "42\n")

    def test_fresh_namespace_forgets(self):
        run("y = 1")
        self.assertIn("NameError", run("y"))

    def test_main_name(self):
        self.assertEqual(run("__name__"), "__main__\n")

    def test_compile_does_not_inherit_future_flags(self):
        # sod_runner itself uses `from __future__ import annotations`; user code must not.
        self.assertEqual(run("def f(x: int): pass\nf.__annotations__['x'] is int"), "True\n")


class Sdk(unittest.TestCase):
    def setUp(self):
        self.calls = []

        def handler(args):
            self.calls.append(args)
            if args["n"] < 0:
                raise sod_tool.InvalidArguments("n must be >= 0")
            if args["n"] == 13:
                raise sod_tool.Failed("unlucky")
            if args["n"] == 99:
                return 99  # a buggy handler
            if args["n"] == 7:
                raise KeyError("bug")
            return str(args["n"] * 2)

        self.tool = sod_tool.Tool(
            name="double",
            version="0.1.0",
            description="Doubles.",
            parameters={
                "type": "object",
                "properties": {"n": {"type": "integer"}, "mode": {"enum": ["a", "b"]}},
                "required": ["n"],
                "additionalProperties": False,
            },
            handler=handler,
        )

    def test_ok(self):
        self.assertEqual(self.tool.dispatch('{"n": 4}'), (sod_tool.OK, "8"))

    def test_invalid_json(self):
        tag, text = self.tool.dispatch("{n: 4}")
        self.assertEqual(tag, sod_tool.INVALID_ARGUMENTS)
        self.assertIn("not valid JSON", text)

    def test_schema_violations(self):
        cases = {
            "[]": "must be of type object",
            "{}": "missing required field 'n'",
            '{"n": "4"}': "n must be of type integer, got string",
            '{"n": true}': "n must be of type integer, got boolean",
            '{"n": 1, "m": 2}': "unknown field(s) 'm'",
            '{"n": 1, "mode": "c"}': 'mode must be one of "a", "b"',
        }
        for arguments, expected in cases.items():
            tag, text = self.tool.dispatch(arguments)
            self.assertEqual(tag, sod_tool.INVALID_ARGUMENTS, arguments)
            self.assertIn(expected, text, arguments)
        self.assertEqual(self.calls, [])

    def test_handler_errors(self):
        self.assertEqual(self.tool.dispatch('{"n": -1}'), (sod_tool.INVALID_ARGUMENTS, "n must be >= 0"))
        self.assertEqual(self.tool.dispatch('{"n": 13}'), (sod_tool.FAILED, "unlucky"))
        tag, text = self.tool.dispatch('{"n": 7}')
        self.assertEqual(tag, sod_tool.FAILED)
        self.assertIn("KeyError", text)
        tag, text = self.tool.dispatch('{"n": 99}')
        self.assertEqual(tag, sod_tool.FAILED)
        self.assertIn("expected str", text)

    def test_lone_surrogates_are_escaped(self):
        tool = sod_tool.Tool("s", "0", "d", {"type": "object"}, lambda a: "x\udc80y")
        self.assertEqual(tool.dispatch("{}"), (sod_tool.OK, "x\\udc80y"))

    def test_parameters_json_is_canonical(self):
        self.assertTrue(self.tool.parameters_json.startswith('{"additionalProperties": false'))

    def test_non_object_schema_is_rejected(self):
        with self.assertRaises(ValueError):
            sod_tool.Tool("t", "0", "d", {"type": "string"}, lambda a: "")


def _bindings_dir() -> Path | None:
    """The bindings build.sh generated, or freshly generated ones if componentize-py exists."""
    built = ROOT / "target" / "tools" / "python-bindings"
    if (built / "wit_world").is_dir():
        return built
    cpy = ROOT / ".venv" / "bin" / "componentize-py"
    if not cpy.exists():
        return None
    out = Path(tempfile.mkdtemp(prefix="sod-python-bindings-"))
    subprocess.run(
        [str(cpy), "-d", str(ROOT / "sdk" / "wit"), "-w", "tool", "bindings", str(out)],
        check=True,
        capture_output=True,
    )
    return out


class World(unittest.TestCase):
    """`Tool.world()` against the bindings componentize-py generates from sdk/wit."""

    @classmethod
    def setUpClass(cls):
        bindings = _bindings_dir()
        if bindings is None:
            raise unittest.SkipTest("no componentize-py: run tools/python/build.sh first")
        sys.path.insert(0, str(bindings))
        from componentize_py_types import Err
        from wit_world.imports import types

        cls.Err, cls.types = Err, types

    def setUp(self):
        def handler(args):
            if args["s"] == "fail":
                raise sod_tool.Failed("failed on purpose")
            return args["s"].upper()

        tool = sod_tool.Tool("upper", "1.2.3", "Upper-cases.", {
            "type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"],
        }, handler)
        self.world = tool.world()()

    def test_describe(self):
        d = self.world.describe()
        self.assertIsInstance(d, self.types.Descriptor)
        self.assertEqual((d.name, d.version, d.description), ("upper", "1.2.3", "Upper-cases."))
        self.assertIn('"required": ["s"]', d.parameters)

    def test_call_and_errors(self):
        self.assertEqual(self.world.call('{"s": "ab"}'), "AB")
        with self.assertRaises(self.Err) as e:
            self.world.call('{"s": 1}')
        self.assertIsInstance(e.exception.value, self.types.ToolError_InvalidArguments)
        with self.assertRaises(self.Err) as e:
            self.world.call('{"s": "fail"}')
        self.assertEqual(e.exception.value, self.types.ToolError_Failed("failed on purpose"))


if __name__ == "__main__":
    unittest.main()
