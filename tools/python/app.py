"""The python tool: runs model-written Python (CPython 3.14 on WASI) with sympy and mpmath.

Arguments: ``{"code": "...", "session": "optional id"}``. See :mod:`sod_runner` for how code
is chosen, run and rendered, and :mod:`preload` for what is importable and what is locked.

Sessions: without ``session`` every call runs in a fresh global namespace. With a session id
the namespace (variables, functions, imports) persists across calls carrying the same id.
For state to persist the instance must persist too: the caller passes the same id to the
host as well (``sod_sandbox::CallOptions::session``), which then keeps the instance alive
between calls instead of starting a fresh one. The guest keeps one namespace per id, so
several ids sharing an instance still do not see each other's variables.

This module is imported by componentize-py at build time: the imports, the warm-up calls in
:func:`_warm_up` (which also force sympy's lazy imports) and :func:`preload.lock_down` all
run then, and the resulting interpreter state is what each instance starts from.
"""

from __future__ import annotations

import json

import preload

#: What the build could not preload (optional modules, sympy submodules with missing
#: dependencies). componentize-py hides the build's stdout, so the notes are kept here too.
NOTES = preload.preload()

import sod_runner  # noqa: E402 - after preload, like everything that follows
import sod_tool  # noqa: E402

#: Longest accepted session id, in characters.
MAX_SESSION_ID_CHARS = 256

DESCRIPTION = (
    "Runs Python 3.14 code and returns what it prints (stdout, then stderr or the traceback). "
    "If the code contains a ```python fenced block, only the first block runs. If the last "
    "line is a bare expression, its value is printed. sympy and mpmath are preloaded (import "
    "them as usual) along with the pure standard library (math, fractions, decimal, "
    "itertools, collections, statistics, re, json, datetime, random, ...); numpy, pandas and "
    "scipy are not available, nor are files outside the working directory, the network, "
    "subprocesses or threads. Give a `session` id to keep variables between calls; without "
    f"one every call starts fresh. Printed output beyond {sod_runner.OUTPUT_LIMIT_BYTES // 1024} "
    f"KiB is cut; the recursion limit is {preload.RECURSION_LIMIT}."
)

PARAMETERS = {
    "type": "object",
    "properties": {
        "code": {
            "type": "string",
            "description": "Python source, or text containing a ```python fenced block.",
        },
        "session": {
            "type": "string",
            "description": "Optional id; calls with the same id share variables.",
        },
    },
    "required": ["code"],
    "additionalProperties": False,
}


class Session:
    """The state one session id keeps across calls: its namespace and its cells' sources."""

    def __init__(self) -> None:
        self.namespace = sod_runner.new_namespace()
        self.sources: dict[str, str] = {}

    def next_filename(self) -> str:
        """Name of the session's next cell in tracebacks: ``<cell 1>``, ``<cell 2>``, ..."""
        return f"<cell {len(self.sources) + 1}>"


_sessions: dict[str, Session] = {}

#: True while the module is imported at build time. componentize-py pre-initialises on
#: wasmtime's default wasm stack, which is much smaller than the host's 4 MiB one, so the
#: warm-up runs with a lower recursion limit.
_building = True
_BUILD_RECURSION_LIMIT = 1000

#: Name under which a stateless call's code appears in tracebacks.
STATELESS_FILENAME = "<code>"


def handle(args: dict) -> str:
    """Runs ``args["code"]``, in the namespace of ``args["session"]`` when given."""
    code = args["code"]
    session_id = args.get("session")
    preload.apply_recursion_limit(_BUILD_RECURSION_LIMIT if _building else preload.RECURSION_LIMIT)
    if session_id is None:
        try:
            return sod_runner.run(code, sod_runner.new_namespace(), STATELESS_FILENAME)
        finally:
            sod_runner.forget_source(STATELESS_FILENAME)
    if not session_id or len(session_id) > MAX_SESSION_ID_CHARS:
        raise sod_tool.InvalidArguments(
            f"session must be a non-empty string of at most {MAX_SESSION_ID_CHARS} characters"
        )
    session = _sessions.get(session_id)
    if session is None:
        session = _sessions[session_id] = Session()
    # Cell names are per session: make this session's sources the ones tracebacks show.
    for filename, source in session.sources.items():
        sod_runner.register_source(filename, source)
    filename = session.next_filename()
    session.sources[filename] = sod_runner.extract_code(code)
    return sod_runner.run(code, session.namespace, filename)


TOOL = sod_tool.Tool(
    name="python",
    version="0.1.0",
    description=DESCRIPTION,
    parameters=PARAMETERS,
    handler=handle,
)

#: Build-time checks: (arguments, expected output). Running them through the tool also
#: triggers every lazy import these calls need, so the snapshot holds them.
WARM_UP = (
    ({"code": "print(1+1)"}, "2\n"),
    ({"code": "from sympy import *\nx = symbols('x')\nsolve(x**2 - 5*x + 6, x)"}, "[2, 3]\n"),
    ({"code": "from sympy import *\nx, y = symbols('x y')\n"
              "print(solve([x + y - 3, x - y - 1], [x, y]))\n"
              "print(simplify(sin(x)**2 + cos(x)**2))\n"
              "print(factor(x**3 - x))\n"
              "print(expand((x + 1)**3))\n"
              "print(integrate(x*exp(x), x))\n"
              "print(integrate(exp(-x**2), (x, -oo, oo)))\n"
              "print(diff(sin(x)*x, x))\n"
              "print(limit(sin(x)/x, x, 0))\n"
              "print(series(exp(x), x, 0, 4))\n"
              "print(Matrix([[1, 2], [3, 4]]).det(), Matrix([[1, 2], [3, 4]]).inv())\n"
              "print(Matrix([[2, 0], [0, 3]]).eigenvals())\n"
              "print(nsimplify(0.5), Rational(1, 3) + Rational(1, 6))\n"
              "print(list(primerange(1, 20)), factorint(360), isprime(97), prime(10))\n"
              "k, n = symbols('k n', integer=True, positive=True)\n"
              "print(summation(k, (k, 1, n)))\n"
              "print(apart(1/(x**2 - 1)), trigsimp(2*sin(x)*cos(x)))\n"
              "print(N(pi, 20), sqrt(8), binomial(10, 3), factorial(10))\n"
              "f = Function('f')\n"
              "print(dsolve(f(x).diff(x) - f(x), f(x)))\n"
              "print(linsolve([x + y - 2, x - y], x, y), roots(x**2 - 1))\n"
              "print(nsolve(cos(x) - x, x, 1))\n"
              "print(latex(x**2 / 2), sympify('2*x + 1').subs(x, 3))\n"
              "print(Poly(x**2 + 2*x + 1, x).all_coeffs(), gcd(12, 18), mod_inverse(3, 7))\n"
              "print(solveset(x**2 - 4, x, S.Reals), Eq(x, 1), Abs(-3), floor(2.5))\n"},
     "{x: 2, y: 1}\n1\nx*(x - 1)*(x + 1)\nx**3 + 3*x**2 + 3*x + 1\n(x - 1)*exp(x)\nsqrt(pi)\n"
     "x*cos(x) + sin(x)\n1\n1 + x + x**2/2 + x**3/6 + O(x**4)\n"
     "-2 Matrix([[-2, 1], [3/2, -1/2]])\n{2: 1, 3: 1}\n1/2 1/2\n"
     "[2, 3, 5, 7, 11, 13, 17, 19] {2: 3, 3: 2, 5: 1} True 29\nn**2/2 + n/2\n"
     "-1/(2*(x + 1)) + 1/(2*(x - 1)) sin(2*x)\n3.1415926535897932385 2*sqrt(2) 120 3628800\n"
     "Eq(f(x), C1*exp(x))\n{(1, 1)} {-1: 1, 1: 1}\n0.739085133215161\n"
     "\\frac{x^{2}}{2} 7\n[1, 2, 1] 6 5\n{-2, 2} Eq(x, 1) 3 2\n"),
    ({"code": "import mpmath\nmpmath.mp.dps = 30\nprint(mpmath.quad(mpmath.sin, [0, mpmath.pi]))\n"
              "print(mpmath.findroot(lambda t: t**2 - 2, 1))\nmpmath.mp.dps = 15"},
     "2.0\n1.41421356237309504880168872421\n"),
    ({"code": "import math, cmath, fractions, decimal, statistics, itertools, collections\n"
              "import heapq, bisect, datetime, re, json, random, string, textwrap, functools\n"
              "print(math.comb(10, 3), cmath.sqrt(-1), fractions.Fraction(3, 6))\n"
              "decimal.getcontext().prec = 30\nprint(decimal.Decimal(1) / decimal.Decimal(7))\n"
              "decimal.getcontext().prec = 28\n"
              "print(statistics.mean([1, 2, 3, 4]), statistics.median([3, 1, 2]))\n"
              "print(list(itertools.permutations('ab')), collections.Counter('aab'))\n"
              "print(heapq.nsmallest(2, [5, 1, 3]), bisect.bisect([1, 2, 4], 3))\n"
              "print(datetime.date(2024, 3, 1) - datetime.timedelta(days=1))\n"
              "print(datetime.datetime(2024, 1, 2, 3, 4).strftime('%Y-%m-%d %H:%M'))\n"
              "print(re.findall(r'\\d+', 'a1b22'), json.dumps({'a': [1, 2]}, sort_keys=True))\n"
              "print(textwrap.fill('a b c', 3), string.ascii_lowercase[:3])\n"
              "print(functools.reduce(lambda a, b: a * b, range(1, 6)))\n"},
     "120 1j 1/2\n0.142857142857142857142857142857\n2.5 2\n"
     "[('a', 'b'), ('b', 'a')] Counter({'a': 2, 'b': 1})\n[1, 3] 2\n2024-02-29\n"
     "2024-01-02 03:04\n['1', '22'] {\"a\": [1, 2]}\na b\nc abc\n120\n"),
    ({"code": "def f(n):\n    return f(n + 1)\nf(0)"}, None),
    ({"code": "1/0"}, "Traceback (most recent call last):\n  File \"<code>\", line 1, in <module>\n"
                      "    1/0\n    ~^~\nZeroDivisionError: division by zero\n"),
    ({"code": "x = (1,"}, None),
    ({"code": "a = 20", "session": "warm-up"}, ""),
    ({"code": "a + 1", "session": "warm-up"}, "21\n"),
)


def _warm_up() -> None:
    """Runs :data:`WARM_UP` through the tool; raises if an output differs from the expected."""
    for args, expected in WARM_UP:
        tag, text = TOOL.dispatch(json.dumps(args))
        if tag != sod_tool.OK or (expected is not None and text != expected):
            raise RuntimeError(
                f"python tool warm-up failed for {args['code']!r}:\n"
                f"got ({tag}):\n{text}\nexpected:\n{expected}"
            )
    # sympy's caches stay filled: the snapshot starts every instance with them warm (the
    # cache is transparent, and its content is the same for every run of one artifact).
    _sessions.clear()


_warm_up()

#: The exports componentize-py binds to the `tool` world (imports the generated bindings,
#: so it comes before the import system is closed).
WitWorld = TOOL.world()

_building = False
preload.lock_down()
