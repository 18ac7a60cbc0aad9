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
    # The bottom layer: the toy world imports nothing of the project's above it, not even the protocol.
    "world": {"prefect", "mlflow", "lancedb", "torch", "storage", "models", "models.protocol", "tasks",
              "tasks.logic", "flows", "dashboards"},
    "dashboards": {"prefect", "torch", "tasks", "models", "flows"},
    # Text conventions every layer shares: below the world, importing nothing of the project.
    "text": {"prefect", "mlflow", "lancedb", "torch", "storage", "models", "models.protocol", "tasks", "tasks.logic",
             "flows", "dashboards", "world"},
}
# The real-model adapters and what they share work for any model: none of them speaks the toy world.
REAL_ADAPTER_FILES = ("models/janus_backbone.py", "models/composite_backbone.py", "models/pretrained_adapter.py",
                      "models/instruction_prompts.py", "models/tokenizer_words.py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):  # noqa: SIM114
            names |= {a.name.split(".")[0] for a in node.names}
            names |= {"tasks.logic" for a in node.names if a.name.startswith("tasks.logic")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0] if not node.module.startswith("tasks.logic") else "tasks.logic")
            if node.module == "models.protocol":  # the protocol's plain request types are for the layers above
                names.discard("models")
                names.add("models.protocol")
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


def test_the_real_model_adapters_do_not_import_the_toy_world():
    problems = [f"{name} imports world" for name in REAL_ADAPTER_FILES if "world" in _imports(ROOT / name)]
    assert not problems, "\n".join(problems)


def test_no_grab_bag_module_names():
    names = {p.name for package in FORBIDDEN for p in (ROOT / package).rglob("*.py")}
    assert not names & {"utils.py", "helpers.py", "manager.py", "common.py"}


def test_the_import_reader_sees_the_protocol_and_logic_imports_the_bottom_layer_may_not_make(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from models.protocol import SolveRequest\nimport tasks.logic.answers\n"
                      "def f():\n    from tasks.logic import voting\n")
    assert _imports(module) == {"models.protocol", "tasks", "tasks.logic"}
    assert _imports(module) & FORBIDDEN["world"] == {"models.protocol", "tasks", "tasks.logic"}


def _environment_writes(path: Path) -> list[int]:
    """Lines inside functions that change os.environ (assignment, del, update/pop/setdefault/clear)."""
    lines = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else []
            for t in targets:
                if isinstance(t, ast.Subscript) and ast.unparse(t.value) == "os.environ":
                    lines.append(node.lineno)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and ast.unparse(node.func.value) == "os.environ"
                    and node.func.attr in ("update", "pop", "setdefault", "clear", "__setitem__")):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_only_the_command_line_entry_point_rewrites_the_environment():
    """Flows and tasks get what they work on as parameters (an experiment arm's store namespace too), never by
    rewriting the process environment for the code they call. The CLI sets it once, before any flow starts; a
    torchrun rank sets its own device."""
    allowed = {"flows/cli.py", "tasks/finetune_ranks.py"}
    problems = [f"{p.relative_to(ROOT)}:{line}" for package in ("flows", "tasks", "storage", "models", "dashboards")
                for p in (ROOT / package).rglob("*.py") if str(p.relative_to(ROOT)) not in allowed
                for line in _environment_writes(p)]
    assert not problems, "os.environ changed in a function at " + ", ".join(problems)
