"""No module of the suite imports a test module: what two test files share lives in a helper module
(tests/factories.py, tests/objects.py, tests/worker.py, …), so that running, moving or deleting one
test file never changes another, and pytest never collects a test twice under two names."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _is_test_module(dotted: str) -> bool:
    return dotted.rsplit(".", 1)[-1].startswith("test_")


def imported_test_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) of each test module that `source`, a module of `package`, imports anywhere in
    its body, relative imports and `from package import test_x` included; a test function imported by
name counts too, since pytest would collect it again where it is imported."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if _is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            if _is_test_module(base):
                found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if _is_test_module(alias.name)]
    return sorted(found)


def test_the_finder_sees_every_form_of_import():
    source = (
        "import tests.a.test_b\n"
        "from tests.a.test_b import helper\n"
        "from tests.a import test_b\n"
        "from .test_b import helper\n"
        "def f():\n"
        "    from ..c.test_d import other\n"
        "from tests.a.helpers import test_data_of\n"
        "from tests.objects import request_body\n"
    )
    assert imported_test_modules(source, "tests.a") == [
        (1, "tests.a.test_b"), (2, "tests.a.test_b"), (3, "tests.a.test_b"), (4, "tests.a.test_b"),
        (6, "tests.c.test_d"), (7, "tests.a.helpers.test_data_of"),
    ]


def test_no_module_of_the_suite_imports_a_test_module():
    offences = []
    for path in sorted(TESTS.rglob("*.py")):
        package = ".".join(path.relative_to(TESTS.parent).parent.parts)
        for line, module in imported_test_modules(path.read_text(), package):
            offences.append(f"{path.relative_to(TESTS.parent)}:{line} imports {module}")
    assert offences == [], "move what they share into a helper module:\n" + "\n".join(offences)
