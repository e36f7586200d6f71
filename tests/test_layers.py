"""The layer rules of docs/ARCHITECTURE.md, read from every import of tb_varupdate (top-level and inside functions)."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tb_varupdate"
FRAMEWORKS = ("tensorflow", "keras", "torch", "lightning", "pytorch_lightning", "transformers", "peft", "accelerate")

# What each part may import of tb_varupdate besides itself (`errors` is open to all).
ALLOWED = {
    "format": set(),
    "verdicts": {"format"},
    "reader": {"format", "verdicts"},
    "writers": {"format", "verdicts", "writers"},
    "plugin": {"format", "verdicts", "reader", "frontend"},
    "cli": {"format", "verdicts", "reader"},
}
# Parts that run in TensorBoard or the CLI, or are shared by every writer: no training framework.
FRAMEWORK_FREE = ("format", "verdicts", "reader", "plugin", "cli", "writers.common", "writers.counters",
                  "writers.events", "writers.reference", "errors", "__init__")


def _module(path):
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _imports(path):
    """Absolute names of every module `path` imports (a `from x import y` gives x.y as well as x)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "%s: relative import of %r" % (path, node.module)
            names.add(node.module)
            names.update("%s.%s" % (node.module, alias.name) for alias in node.names)
    return names


def _ours(names):
    """The parts of tb_varupdate among `names` ("format", "writers.tf", "errors", ...)."""
    parts = set()
    for name in names:
        if name == "tb_varupdate" or not name.startswith("tb_varupdate."):
            continue
        parts.add(name.split(".")[1])
    return parts


MODULES = {_module(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_part():
    top = {name for name in MODULES if "." not in name}
    assert top == {"__init__", "errors", "plugin", "cli", "keras", "torch", "lightning", "transformers"}
    assert not [name for name in MODULES if "_tf_" in name or "_torch_" in name]


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_a_part_imports_only_the_parts_below_it(part):
    wrong = {}
    for name, path in MODULES.items():
        if name.split(".")[0] != part:
            continue
        found = _ours(_imports(path)) - ALLOWED[part] - {part, "errors"}
        if found:
            wrong[name] = sorted(found)
    assert wrong == {}


def test_no_writer_imports_the_reader_and_neither_plugin_nor_cli_imports_a_writer():
    users = {name: _ours(_imports(path)) for name, path in MODULES.items()}
    assert [name for name, parts in users.items() if name.startswith("writers.") and "reader" in parts] == []
    assert "writers" not in users["plugin"] | users["cli"]


def test_each_framework_stays_in_its_folder():
    for name, path in MODULES.items():
        imported = {n.split(".")[0] for n in _imports(path)}
        if name.startswith(FRAMEWORK_FREE):
            assert not imported & set(FRAMEWORKS), name
        if name.startswith("writers.tf."):
            assert not imported & {"torch", "lightning", "transformers"}, name
            assert "writers.torch" not in {".".join(n.split(".")[1:3]) for n in _imports(path)}, name
        if name.startswith("writers.torch."):
            assert not imported & {"tensorflow", "keras"}, name
            assert "writers.tf" not in {".".join(n.split(".")[1:3]) for n in _imports(path)}, name


def test_each_package_face_is_short_with_all():
    for path in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [target.id for node in tree.body if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name)]
        assert "__all__" in names, path
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 25, path
