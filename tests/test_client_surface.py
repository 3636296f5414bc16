"""The two clients' public surfaces match: docs/client.md's table (Python name / JS name / what it
does) names every public method and property of webim_client.Client and every method of the JS
ChatClient's prototype, and nothing else; a call one language lacks is a row with "—" that says
why."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from webim_client import Client

ROOT = Path(__file__).resolve().parent.parent
HEADING = "| Python (`Client`) | JS (`ChatClient`) | what it does |"


def name_in(cell: str) -> str | None:
    """`name(args)` -> name; "—" (none) -> None."""
    if cell == "—":
        return None
    found = re.fullmatch(r"`(\w+)[^`]*`", cell)
    assert found, f"a cell that names no call: {cell}"
    return found.group(1)


def table() -> list[tuple[str | None, str | None]]:
    """(Python name, JS name) of each row."""
    text = (ROOT / "docs" / "client.md").read_text()
    assert HEADING in text, "the surface table is gone from docs/client.md"
    rows = []
    for line in text.split(HEADING, 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        python, js = (cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:3])
        rows.append((name_in(python), name_in(js)))
    return rows


def python_surface() -> set[str]:
    return {name for name in dir(Client) if not name.startswith("_")}


def js_surface() -> set[str]:
    node = shutil.which("node")
    assert node, "node is needed (tools/ensure-system installs it)"
    script = ('import("./frontend/lib/client.js").then((m) => '
              'console.log(JSON.stringify(Object.getOwnPropertyNames(m.ChatClient.prototype))))')
    names = json.loads(subprocess.run([node, "-e", script], cwd=ROOT, check=True, capture_output=True, text=True,
                                      timeout=60).stdout)
    return set(names) - {"constructor"}


def test_every_row_names_a_call_and_every_cell_is_well_formed() -> None:
    rows = table()
    assert len(rows) >= 20
    assert all(python or js for python, js in rows), "a row with neither name"


def test_the_python_client_s_public_surface_is_the_table_s() -> None:
    listed = {python for python, _ in table() if python}
    assert python_surface() == listed, (f"in Client, not in docs/client.md: {python_surface() - listed}; "
                                        f"in the table, not in Client: {listed - python_surface()}")


def test_the_js_client_s_public_surface_is_the_table_s() -> None:
    listed = {js for _, js in table() if js}
    assert js_surface() == listed, (f"in ChatClient, not in docs/client.md: {js_surface() - listed}; "
                                    f"in the table, not in ChatClient: {listed - js_surface()}")


def test_names_differ_only_in_case_where_a_row_has_both() -> None:
    """snake_case in Python, camelCase in JS, the same words: start/stop and close differ on purpose."""
    def words(name: str) -> str:
        return name.replace("_", "").lower()

    paired = [(python, js) for python, js in table() if python and js and (python, js) != ("close", "stop")]
    assert [pair for pair in paired if words(pair[0]) != words(pair[1])] == []
