"""The architecture page stays true to the tree, and ``marl`` imports without cycles.

* no file of the repository points readers at design notes that are not in it;
* docs/architecture.md exists, every file path and every ``tests/...py::test_name`` it names
  exists, its relative links resolve, and the invariants and the "Defaults" section that code
  comments cite are on the page;
* the import graph of ``marl`` (every ``import marl...`` / ``from marl... import`` in every
  module, at module level and inside functions) has no cycle, and every module imports on its own
  in a fresh interpreter, so no module works only because another one happened to be imported
  first.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PAGE = ROOT / "docs" / "architecture.md"
DANGLING = "".join(["DESIGN", ".md"])  # spelled in two parts so that this file does not match itself

PATH_RE = re.compile(r"(?<![\w/.-])((?:src|tests|conf|docs|benchmarks|scripts)/[\w./-]*|launch\.py|README\.md"
                     r"|pyproject\.toml)")
TEST_RE = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
LINK_RE = re.compile(r"\]\(([^)\s]+)\)")
CITED_INVARIANT_RE = re.compile(r"docs/architecture\.md, invariants? (\d+)(?:, (\d+))?")


def repository_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files: the repository, without build outputs."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True, timeout=60).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                 if p.is_file() and ".git" not in p.parts and "__pycache__" not in p.parts]
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def test_no_file_refers_to_design_notes_outside_the_repository():
    hits = []
    for path in repository_files():
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary
            continue
        for i, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if DANGLING in line:
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "references to a file that is not in the repository:\n" + "\n".join(hits)


def test_architecture_page_names_only_paths_and_tests_that_exist():
    text = PAGE.read_text(encoding="utf-8")
    paths = {m.rstrip(".") for m in PATH_RE.findall(text)}
    assert len(paths) > 30, sorted(paths)  # the regex found the page's paths
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists())
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
    tests = TEST_RE.findall(text)
    assert len(tests) > 20
    absent = [f"{f}::{name}" for f, name in tests
              if not re.search(rf"^def {name}\(", (ROOT / f).read_text(encoding="utf-8"), re.MULTILINE)]
    assert not absent, f"docs/architecture.md names tests that do not exist: {absent}"
    links = [link for link in LINK_RE.findall(text) if not re.match(r"[a-z]+:", link) and not link.startswith("#")]
    broken = [link for link in links if not (PAGE.parent / link.split("#")[0]).exists()]
    assert not broken, f"broken links in docs/architecture.md: {broken}"


def test_cited_invariants_and_defaults_are_on_the_page():
    text = PAGE.read_text(encoding="utf-8")
    numbered = {int(n) for n in re.findall(r"^(\d+)\. \*\*", text, re.MULTILINE)}
    assert numbered == set(range(1, 10)), sorted(numbered)
    assert re.search(r"^## Defaults$", text, re.MULTILINE)
    cited: set[int] = set()
    for path in repository_files():
        if path.suffix in (".py", ".yaml", ".md") and path != PAGE:
            for m in CITED_INVARIANT_RE.finditer(path.read_text(encoding="utf-8", errors="replace")):
                cited |= {int(n) for n in m.groups() if n}
    assert cited and cited <= numbered, f"cited invariants {sorted(cited)}, on the page {sorted(numbered)}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    assert "(docs/architecture.md)" in layout.split("\n## ")[0]


# --- imports -------------------------------------------------------------------------------------

def marl_modules() -> dict[str, Path]:
    """Every module of the ``marl`` package by dotted name (a package by its ``__init__``)."""
    mods = {}
    for path in sorted((SRC / "marl").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def imported_marl_modules(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The ``marl`` modules that ``name`` imports anywhere in its body (module level or in functions).

    ``from marl.a import b`` imports the module ``marl.a.b`` when there is one, else ``marl.a``.
    Importing ``marl.a.b`` also initialises the package ``marl.a`` first, but that is not an
    edge: a package's ``__init__`` may import its own submodules without forming a cycle, as long
    as none of them imports a name back from the package's ``__init__``.
    """
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        for target in targets:
            while target and target not in mods:  # import marl.x.y.Class -> the module marl.x.y
                target = target.rpartition(".")[0]
            if target and target != name and target.split(".")[0] == "marl":
                out.add(target)
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_import_graph_of_marl_has_no_cycle():
    mods = marl_modules()
    graph = {name: imported_marl_modules(name, path, mods) for name, path in mods.items()}
    assert sum(map(len, graph.values())) > 50  # the graph was actually built
    assert graph["marl.report"] >= {"marl.report.cli", "marl.report.model"}
    cycles = find_cycles(graph)
    detail = [" <-> ".join(c) + ": " + "; ".join(f"{a} imports {sorted(graph[a] & set(c))}" for a in c)
              for c in cycles]
    assert not cycles, "import cycles inside marl:\n" + "\n".join(detail)


def test_graph_finds_a_cycle_when_there_is_one():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


# Imports the third-party libraries once, then forks one child per marl module: each child starts
# with no marl module loaded, as a fresh interpreter would, without paying torch's import each time.
IMPORT_EACH = r"""
import json, os, sys, traceback
for lib in ("numpy", "torch", "omegaconf", "hydra"):
    try:
        __import__(lib)
    except ImportError:
        pass
assert not [m for m in sys.modules if m == "marl" or m.startswith("marl.")], "marl imported too early"
results = {}
for name in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            __import__(name)
            msg = {"ok": True}
        except ModuleNotFoundError as exc:
            msg = {"ok": False, "missing": exc.name, "error": traceback.format_exc()}
        except BaseException:
            msg = {"ok": False, "missing": None, "error": traceback.format_exc()}
        os.write(w, json.dumps(msg).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    results[name] = json.loads(data) if data else {"ok": False, "missing": None, "error": "child died"}
print(json.dumps(results))
"""


def test_every_marl_module_imports_on_its_own_in_a_fresh_interpreter():
    # __main__ modules run their command when imported; the CLI is run below instead.
    names = [n for n in marl_modules() if not n.endswith(".__main__")]
    proc = subprocess.run([sys.executable, "-c", IMPORT_EACH, *names], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(results) == set(names)
    optional = {n: r["missing"] for n, r in results.items()
                if not r["ok"] and r["missing"] and not r["missing"].startswith("marl")}
    failed = {n: r["error"] for n, r in results.items() if not r["ok"] and n not in optional}
    assert not failed, "modules that fail to import on their own:\n" + "\n".join(
        f"--- {n}\n{e[-1500:]}" for n, e in failed.items())
    if optional:  # an extra that is not installed here: not this test's concern, but say so
        warnings.warn("not imported for want of an optional dependency: "
                      + ", ".join(f"{n} (needs {dep})" for n, dep in sorted(optional.items())))
    cli = subprocess.run([sys.executable, "-m", "marl.report", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 0 and "python -m marl.report" in cli.stdout, cli.stderr[-2000:]
