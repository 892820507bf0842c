"""Build-time preloading and lock-down of the python tool's interpreter.

componentize-py imports the app module while it builds the component and snapshots the
interpreter's memory afterwards. At run time nothing can be imported from disk, so every
module user code may need must be imported here, at build time:

* :data:`STDLIB_REQUIRED` — standard-library modules the tool promises; the build fails if
  one cannot be imported;
* :data:`STDLIB_OPTIONAL` — further pure modules that are imported when they work under WASI;
* sympy and mpmath with every submodule (:func:`import_package_tree`), since both import
  submodules lazily (``solve`` pulls in ``sympy.tensor``, for example).

sympy's gmpy probe imports ``ctypes``, which does not exist under WASI: a stub stands in for
it during the import (:func:`ctypes_stub`) and is removed afterwards.

:func:`lock_down` then closes the import system to the disk, installs a finder that explains
which packages are missing on purpose (:data:`UNAVAILABLE`), clamps the recursion limit
(:data:`RECURSION_LIMIT`) and freezes the heap.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.machinery
import os
import pkgutil
import sys
import types
import warnings

#: Standard-library modules that must be importable at run time (the build fails otherwise).
STDLIB_REQUIRED = (
    "abc", "array", "ast", "base64", "binascii", "bisect", "calendar", "cmath", "collections",
    "collections.abc", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "enum", "fractions", "functools", "hashlib", "heapq", "io", "itertools",
    "json", "keyword", "math", "numbers", "operator", "os", "pprint", "random", "re",
    "reprlib", "secrets", "statistics", "string", "struct", "sys", "textwrap", "time",
    "traceback", "types", "typing", "unicodedata", "uuid", "warnings", "weakref",
)

#: Standard-library modules preloaded when they import under WASI; missing ones are listed
#: by the build.
STDLIB_OPTIONAL = (
    "argparse", "codecs", "colorsys", "copyreg", "dis", "fnmatch", "gettext", "glob", "graphlib", "gzip", "html", "html.entities", "html.parser", "inspect",
    "ipaddress", "locale", "linecache", "pathlib", "pickle", "platform", "queue", "quopri",
    "shlex", "shutil", "string.templatelib", "stringprep", "tempfile", "timeit",
    "tokenize", "tomllib", "unittest", "urllib", "urllib.parse", "zlib", "zoneinfo", "hmac", "sqlite3", "xml.dom.minidom", "xml.etree.ElementTree", "email",
    "email.message", "threading", "sched", "codeop", "code", "opcode",
    "sysconfig", "wave", "mimetypes", "errno", "contextvars",
)

#: Top-level packages whose whole tree is preloaded.
PACKAGES = ("mpmath", "sympy")

#: Submodules of :data:`PACKAGES` that are not preloaded: test suites, and modules that need
#: software absent under WASI (pyglet, antlr4, llvmlite, pytest) or are deprecated aliases.
PACKAGE_EXCLUDES = (
    "sympy.conftest",
    "sympy.galgebra",
    "sympy.parsing.autolev._antlr",
    "sympy.parsing.latex._antlr",
    "sympy.plotting.pygletplot",
    "sympy.printing.llvmjitcode",
    "sympy.utilities.benchmarking",
    "sympy.utilities.pytest",
    "sympy.utilities.randtest",
    "sympy.utilities.runtests",
    "sympy.utilities.tmpfiles",
    "sympy.testing",
    "sympy.this",
)
_EXCLUDED_PARTS = ("tests", "benchmarks")

#: Recursion limit of user code (CPython's default is 1000). It must turn runaway recursion
#: into a RecursionError before the host's 4 MiB wasm stack overflows, which traps and kills
#: the instance (and with it a session's state). Pure-Python calls barely use the wasm stack
#: (20 000 levels fit), but every level that re-enters the interpreter through C does:
#: ``functools.cache``/``lru_cache`` recursion, the worst common case, was measured to trap
#: at about 2 180 levels (~1.9 KiB of wasm stack per level), and each such level also counts
#: as at least one Python frame. 1500 keeps a ~30% margin below that. Scale it with the
#: host's ``max_wasm_stack`` (about 1500 per 4 MiB). ``sys.setrecursionlimit`` is wrapped so
#: user code cannot raise it further.
RECURSION_LIMIT = 1500

#: Packages that are deliberately absent, with the reason given to the model on import.
_NO_NATIVE = (
    "is not available in this sandbox: only pure-Python packages run here. "
    "Available: the Python standard library (math, cmath, fractions, decimal, statistics, "
    "itertools, functools, collections, heapq, bisect, datetime, re, json, random, ...), "
    "sympy (symbolic math, sympy.Matrix for linear algebra) and mpmath "
    "(arbitrary-precision numerics)."
)
UNAVAILABLE = {
    **{
        name: _NO_NATIVE
        for name in (
            "numpy", "pandas", "scipy", "torch", "tensorflow", "jax", "jaxlib", "sklearn",
            "matplotlib", "seaborn", "plotly", "networkx", "numba", "cupy", "polars",
            "pyarrow", "statsmodels", "gmpy2", "flint", "cython", "PIL", "cv2", "z3",
        )
    },
    **{
        name: "is not available in this sandbox: subprocesses cannot be started."
        for name in ("subprocess", "multiprocessing", "_posixsubprocess", "pty")
    },
    **{
        name: "is not available in this sandbox: there is no network access."
        for name in (
            "socket", "_socket", "ssl", "http", "urllib.request", "requests", "httpx",
            "aiohttp", "ftplib", "smtplib", "imaplib", "poplib",
        )
    },
    "ctypes": "is not available in this sandbox: native code cannot be loaded.",
}


@contextlib.contextmanager
def ctypes_stub():
    """Stands in for ``ctypes`` while sympy is imported, then removes every trace of it.

    sympy.external.gmpy only uses ``sizeof(c_long)``; a C ``long`` is 4 bytes on wasm32.
    """
    real = sys.modules.get("ctypes")
    stub = types.ModuleType("ctypes", "build-time stand-in for ctypes (absent under WASI)")

    class c_long:  # noqa: N801 - mirrors ctypes' name
        """Stand-in for ctypes.c_long."""

    def sizeof(kind):
        if kind is c_long:
            return 4
        raise TypeError(f"the build-time ctypes stub knows only c_long, not {kind!r}")

    stub.c_long = c_long
    stub.sizeof = sizeof
    if real is None:
        sys.modules["ctypes"] = stub
    try:
        yield
    finally:
        if sys.modules.get("ctypes") is stub:
            del sys.modules["ctypes"]


def _excluded(name: str) -> bool:
    if any(part in _EXCLUDED_PARTS for part in name.split(".")):
        return True
    return any(name == ex or name.startswith(ex + ".") for ex in PACKAGE_EXCLUDES)


def import_package_tree(package_name: str) -> list[str]:
    """Imports a package and all its submodules except :data:`PACKAGE_EXCLUDES`.

    Returns the modules that failed, as ``"name: error"``; the caller decides whether that
    is fatal.
    """
    failures: list[str] = []
    package = importlib.import_module(package_name)
    for info in pkgutil.walk_packages(package.__path__, package_name + ".", onerror=lambda _: None):
        if _excluded(info.name):
            continue
        try:
            importlib.import_module(info.name)
        except Exception as e:  # noqa: BLE001 - reported by the build
            failures.append(f"{info.name}: {type(e).__name__}: {e}")
    return failures


def preload() -> list[str]:
    """Imports everything the tool offers; returns notes about optional modules that failed.

    Raises ``ImportError`` if a required module or a package's top level cannot be imported.
    """
    notes: list[str] = []
    for name in STDLIB_REQUIRED:
        importlib.import_module(name)
    for name in STDLIB_OPTIONAL:
        if name in UNAVAILABLE:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - optional
            notes.append(f"optional module {name} not preloaded: {type(e).__name__}: {e}")
    # sympy warns about deprecated aliases while its tree is walked: record, do not print.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ctypes_stub():
            for package in PACKAGES:
                notes.extend(f"not preloaded: {f}" for f in import_package_tree(package))
    if caught:
        notes.append(f"{len(caught)} warning(s) while importing {', '.join(PACKAGES)} (ignored)")
    return notes


class _Unavailable:
    """Meta-path finder that explains why a deliberately absent module cannot be imported."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        for name in (fullname, fullname.split(".")[0]):
            reason = UNAVAILABLE.get(name)
            if reason is not None:
                raise ModuleNotFoundError(f"{name} {reason}", name=fullname)
        return None


class _NotPreloaded:
    """Last meta-path finder: any module not preloaded at build time cannot be imported."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        raise ModuleNotFoundError(
            f"No module named {fullname!r} (only modules preloaded into this sandbox can be "
            "imported: the pure-Python standard library, sympy and mpmath)",
            name=fullname,
        )


_real_setrecursionlimit = sys.setrecursionlimit


def _exit_without_trap(status: int = 0) -> None:
    """Stands in for ``os._exit``, which under WASI ends (traps) the whole instance."""
    raise SystemExit(status)


_exit_without_trap.__name__ = "_exit"
_exit_without_trap.__qualname__ = "_exit"


def _abort_without_trap() -> None:
    """Stands in for ``os.abort``, which under WASI traps the whole instance."""
    raise RuntimeError("os.abort() is not available in this sandbox")


_abort_without_trap.__name__ = "abort"
_abort_without_trap.__qualname__ = "abort"


def _clamped_setrecursionlimit(limit: int) -> None:
    """Like ``sys.setrecursionlimit``, but never above the sandbox's cap."""
    _real_setrecursionlimit(min(int(limit), RECURSION_LIMIT))


_clamped_setrecursionlimit.__name__ = "setrecursionlimit"
_clamped_setrecursionlimit.__qualname__ = "setrecursionlimit"


def apply_recursion_limit(limit: int = RECURSION_LIMIT) -> None:
    """Resets the recursion limit (user code may have changed it) to ``limit``."""
    _real_setrecursionlimit(limit)


def lock_down() -> None:
    """Seals the interpreter after :func:`preload`; call once, at the end of the build.

    * Removes modules that must not be reachable (``ctypes`` and the subprocess/network
      modules listed in :data:`UNAVAILABLE`) from ``sys.modules``, so importing them raises
      a clear ``ModuleNotFoundError``.
    * Empties ``sys.path`` and removes the path-based finder: the build's source directories
      do not exist at run time.
    * Installs the explaining finders and clamps the recursion limit.
    * Makes ``os._exit`` raise ``SystemExit`` and ``os.abort`` raise ``RuntimeError``: the
      real ones end the instance with a trap (a crash, and a lost session).
    * Collects garbage and freezes the heap, so collections at run time skip the snapshot.
    """
    for name in list(sys.modules):
        top = name.split(".")[0]
        if name in UNAVAILABLE or (top in UNAVAILABLE and top == "ctypes"):
            del sys.modules[name]
    sys.path[:] = []
    sys.path_hooks[:] = []
    sys.path_importer_cache.clear()
    sys.meta_path[:] = [
        _Unavailable,
        *(f for f in sys.meta_path if f is not importlib.machinery.PathFinder),
        _NotPreloaded,
    ]
    sys.setrecursionlimit = _clamped_setrecursionlimit
    apply_recursion_limit()
    os._exit = _exit_without_trap
    os.abort = _abort_without_trap
    gc.collect()
    gc.freeze()
