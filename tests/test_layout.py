"""The dependency directions of STYLE.md, read from the import statements of every module."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "tasks/logic": {"prefect", "mlflow", "lancedb", "torch", "storage", "models", "flows"},
    "models": {"prefect", "mlflow", "storage", "tasks", "flows", "lancedb"},
    "storage": {"prefect", "mlflow", "models", "tasks", "flows", "torch"},
    "tasks": {"mlflow", "flows"},
    "flows": {"torch", "lancedb"},
    "world": {"prefect", "mlflow", "lancedb", "torch", "storage", "models", "flows"},
    "dashboards": {"prefect", "torch", "tasks", "models", "flows"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):  # noqa: SIM114
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0] if not node.module.startswith("tasks.logic") else "tasks.logic")
            if node.module == "models.protocol":  # the protocol's plain request types are for everyone
                names.discard("models")
    return names


def test_dependency_directions():
    problems = []
    for package, forbidden in FORBIDDEN.items():
        for path in (ROOT / package).rglob("*.py"):
            if package == "tasks" and "logic" in path.parts:
                continue
            bad = _imports(path) & forbidden
            if bad:
                problems.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not problems, "\n".join(problems)


def test_no_grab_bag_module_names():
    names = {p.name for package in FORBIDDEN for p in (ROOT / package).rglob("*.py")}
    assert not names & {"utils.py", "helpers.py", "manager.py", "common.py"}
