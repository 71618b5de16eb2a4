"""What issue 36 holds the repository to: short source files and functions, a README of at most
200 lines, and no path of the machine a file was written on in the package or the docs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "brainvq"
MACHINE_PATH = re.compile(r"(?<![\w.])/(work|root|home|tmp)/")


def test_no_source_file_over_400_lines_and_no_function_over_80() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 400:
            too_long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long


def test_readme_is_at_most_200_lines_and_gives_the_anomaly_headline() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "AUPRC" in readme and "reconstruction residual" in readme


def test_no_machine_path_in_the_package_or_the_docs() -> None:
    found = []
    files = [ROOT / "README.md", *PACKAGE.rglob("*"), *(ROOT / "docs").rglob("*")]
    for path in sorted(files):
        if path.suffix in {".py", ".md", ".json", ".yaml", ".txt", ".sh"} and path.is_file():
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if MACHINE_PATH.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:80]}")
    assert not found, found
