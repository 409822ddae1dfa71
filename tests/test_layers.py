"""The package layers, checked statically (ast over the project's own files), and imports without side effects.

jobs is the bottom layer (Redis only), cache sits on it, the web app and the workers sit on both and
never on each other: the web app submits tasks by name (webapp/broker.py), only Celery imports `tasks`.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"webapp", "tasks", "engines", "routing", "cache", "monitoring", "jobs", "tenants", "loadtest", "bench"}
MODULES = {"settings", "celeryconfig", "wsgi", "gunicorn_conf", "heap"}
TOP_LEVEL = PACKAGES | MODULES
EXCLUDED_DIRS = {"tests", ".venv", "node_modules", "__pycache__", ".git", "test-artifacts", ".models", ".run"}


def project_files() -> list[Path]:
    """The project's .py files (tests/, .venv/ and other non-source folders left out)."""
    files = list(ROOT.glob("*.py"))
    for folder in ROOT.iterdir():
        if folder.is_dir() and folder.name not in EXCLUDED_DIRS and not folder.name.startswith("."):
            files += folder.rglob("*.py")
    return sorted(path for path in files if not EXCLUDED_DIRS & set(path.relative_to(ROOT).parts))


def owner(path: Path) -> str:
    """The top-level package or module a file belongs to."""
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports_in(source: str, package: str) -> list[tuple[str, int]]:
    """Every module `source` imports, anywhere in it (functions included), relative ones resolved
    against `package` (the importing file's package); with line numbers."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[:len(parts) - node.level + 1]
                found.append((".".join(base + ([node.module] if node.module else [])), node.lineno))
            else:
                found.append((node.module, node.lineno))
    return found


@lru_cache(maxsize=None)
def imports() -> dict[str, list[tuple[str, str, int]]]:
    """Per top-level package: every module it imports, with file and line."""
    found: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for path in project_files():
        rel = str(path.relative_to(ROOT))
        package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
        found[owner(path)] += [(name, rel, line) for name, line in imports_in(path.read_text(), package)]
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def project_edges() -> dict[str, dict[str, list[str]]]:
    """a -> b -> ["file:line", ...] for imports between different top-level packages of the project."""
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for source, found in imports().items():
        for module, rel, line in found:
            if top(module) in TOP_LEVEL and top(module) != source:
                edges[source][top(module)].append(f"{rel}:{line}")
    return edges


def test_the_project_is_the_expected_top_level_packages():
    owners = {owner(path) for path in project_files()}
    assert owners == TOP_LEVEL, f"unexpected: {sorted(owners - TOP_LEVEL)}; missing: {sorted(TOP_LEVEL - owners)}"
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package


def test_the_scan_finds_lazy_and_relative_imports():
    source = textwrap.dedent("""
        import os, jobs.store as store
        from cache import keys

        def later():
            from tasks.context import worker_context
            if True:
                import celery.app

        class Later:
            def method(self):
                from . import sibling
                from ..routing import router
    """)
    found = {name for name, _ in imports_in(source, "webapp.sub")}
    assert found == {"os", "jobs.store", "cache", "tasks.context", "celery.app", "webapp.sub", "webapp.routing"}


def test_the_scan_sees_the_project_imports():
    edges = project_edges()
    assert {"jobs", "settings", "cache"} <= set(edges["webapp"]), dict(edges["webapp"])
    assert "webapp" in edges["wsgi"] and "jobs" in edges["celeryconfig"]


def test_no_two_packages_import_each_other():
    edges = project_edges()
    cycles = [f"{a} <-> {b} ({edges[a][b][0]}; {edges[b][a][0]})"
              for a in sorted(edges) for b in sorted(edges[a]) if a < b and a in edges.get(b, {})]
    assert not cycles, "packages importing each other: " + ", ".join(cycles)


def test_the_web_app_does_not_import_tasks():
    edges = project_edges()
    assert "tasks" not in edges.get("webapp", {}), f"webapp imports tasks at {edges['webapp']['tasks']}"


def test_only_tasks_imports_tasks():
    importers = {source: where["tasks"] for source, where in project_edges().items() if "tasks" in where}
    assert not importers, f"tasks is imported from outside Celery's entry point: {importers}"


def test_cache_jobs_and_tenants_know_neither_flask_nor_celery():
    for package in ("cache", "jobs", "tenants"):
        bad = [f"{module} at {rel}:{line}" for module, rel, line in imports()[package]
               if top(module) in {"flask", "celery", "kombu", "werkzeug", "flask_limiter"}]
        assert not bad, f"{package} imports a web or worker framework: {bad}"


def test_cache_builds_only_on_jobs():
    bad = {target: where for target, where in project_edges().get("cache", {}).items() if target != "jobs"}
    assert not bad, f"cache imports project packages other than jobs: {bad}"
    assert "jobs" in project_edges()["cache"], "the check would pass vacuously"


def test_tenants_build_on_the_settings_alone():
    bad = {target: where for target, where in project_edges().get("tenants", {}).items() if target != "settings"}
    assert not bad, f"tenants imports project packages other than settings: {bad}"


def test_jobs_imports_no_project_package():
    bad = dict(project_edges().get("jobs", {}))
    assert not bad, f"jobs must build on Redis alone, but imports {bad}"
    assert imports()["jobs"], "the check would pass vacuously"


# --- Importing has no side effects -------------------------------------------------------------------------------

IMPORT_CHECK = textwrap.dedent("""
    import importlib, json, logging, os, sys
    sys.path.insert(0, os.getcwd())
    env_before = dict(os.environ)
    trace = logging.getLogger("celery.app.trace")
    filters_before = list(trace.filters)
    imported, missing_optional, failed = [], [], []
    for name in json.loads(sys.argv[1]):
        try:
            importlib.import_module(name)
            imported.append(name)
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] in {"mlx", "mlx_lm", "llama_cpp"}:
                missing_optional.append(name)
            else:
                failed.append(f"{name}: {err!r}")
        except Exception as err:
            failed.append(f"{name}: {err!r}")
    with open("/proc/self/maps") as maps:
        libraries = sorted({line.split()[-1] for line in maps if "/" in line})
    blas = [lib for lib in libraries if os.path.basename(lib).startswith(("libopenblas", "libblas"))]
    changed = sorted(k for k in set(env_before) | set(os.environ) if env_before.get(k) != os.environ.get(k))
    print(json.dumps({
        "imported": imported, "missing_optional": missing_optional, "failed": failed,
        "environment_changed": changed,
        "new_filters": [repr(f) for f in trace.filters if f not in filters_before],
        "mlx": sorted(m for m in sys.modules if m.split(".")[0] in ("mlx", "mlx_lm")),
        "blas": blas, "maps_read": len(libraries),
    }))
""")
SKIPPED_FILES = {"routing/onnx_export.py", "engines/mlx_engine.py", "engines/gguf.py"}


def modules_to_import() -> list[str]:
    names = []
    for package in ("webapp", "engines", "routing", "cache", "jobs", "monitoring"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if "__pycache__" in rel.parts or path.name == "__main__.py" or rel.as_posix() in SKIPPED_FILES:
                continue
            names.append(module_name(path))
    return names + ["settings", "heap"]


def test_importing_the_project_has_no_side_effects():
    names = modules_to_import()
    assert {"webapp.jobs", "cache.semantic", "jobs.store", "engines.provider", "monitoring.queues"} <= set(names)
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK, json.dumps(names)], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["failed"], f"modules that do not import: {report['failed']}"
    assert len(report["imported"]) > len(names) / 2, f"most modules were skipped: {report['missing_optional']}"
    assert report["maps_read"] > 0
    assert not report["environment_changed"], f"importing changed os.environ: {report['environment_changed']}"
    assert not report["new_filters"], f"importing added log filters to celery.app.trace: {report['new_filters']}"
    assert not report["mlx"], f"importing loaded MLX: {report['mlx']}"
    assert not report["blas"], f"importing loaded a system BLAS: {report['blas']}"
