"""Rules of the code base that a linter does not check."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fcmbench"


def private_uses(path: Path) -> list[str]:
    """Private names of other objects or modules (``model._decompress_ar``, ``from x import _y``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
        if isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("fcmbench"):
            found += [f"{path.name}:{node.lineno} {alias.name}" for alias in node.names if alias.name.startswith("_")]
    return found


def test_no_private_method_of_a_library_or_another_object_is_called():
    uses = [use for path in sorted(PACKAGE.rglob("*.py")) for use in private_uses(path)]
    assert uses == []


def test_the_rule_finds_a_private_call(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from compressai.x import _y\nself._ok()\nmodel._decompress_ar(1)\n")
    assert private_uses(sample) == ["sample.py:1 _y", "sample.py:3 model._decompress_ar"]
