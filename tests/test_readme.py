"""README.md cannot drift: every python and shell block runs as written, in order, in one empty folder (as a new
user would go down the page), and its tables name every node, workflow and thumbnail.

A block whose first line is ``# needs: <what>`` (a download, real weights, a GPU) is left out; the block that runs
the test suite is not run here but must be the command ``.ci/run`` runs. ``hunyuan-dit`` and ``python`` in shell
blocks are this checkout's (the installed command may point elsewhere).
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
SHELLS, PYTHONS = {"bash", "sh", "shell"}, {"python", "py"}
TEST_COMMAND = "-m pytest"


def _blocks() -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in BLOCK.findall(README)]


def _left_out(body: str) -> bool:
    return body.startswith("# needs: ")


def _env(tmp_path: Path) -> dict:
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("python", "python3"):
        if not (bin_dir / name).exists():
            (bin_dir / name).symlink_to(sys.executable)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1", "HUNYUAN_DIT_CONFIG_DIR": str(tmp_path / ".config")}


def test_every_block_is_python_or_shell_and_says_what_it_needs():
    blocks = _blocks()
    assert len(blocks) >= 10
    for lang, body in blocks:
        assert lang in SHELLS | PYTHONS, f"a ```{lang} block: the README test runs only python and shell:\n{body}"
        if body.startswith("# needs"):
            assert re.match(r"# needs: \S", body), f"write '# needs: <what>' on the first line:\n{body}"


def test_the_test_command_is_the_one_ci_runs():
    (command,) = [body.strip() for lang, body in _blocks() if TEST_COMMAND in body]
    env, _, args = command.partition(" python ")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f"python3 {args}" in ci.splitlines()  # CI's interpreter is python3
    for assignment in env.split():
        assert f"export {assignment}" in ci or re.search(rf"^export .*\b{re.escape(assignment)}\b", ci, re.M)


def test_every_block_runs_as_written(tmp_path, monkeypatch):
    """Python blocks run in this process (each in a fresh namespace: one import of torch for all of them), shell
    blocks in bash; both in the same folder, in README order."""
    env = _env(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HUNYUAN_DIT_CONFIG_DIR", env["HUNYUAN_DIT_CONFIG_DIR"])
    ran = 0
    for number, (lang, body) in enumerate(_blocks(), 1):
        if _left_out(body) or TEST_COMMAND in body:
            continue
        where = f"README block {number} ({lang})"
        if lang in PYTHONS:
            exec(compile(body, where, "exec"), {"__name__": "__main__"})
        else:
            cli = f"{shlex.quote(sys.executable)} -m hunyuan_core.cli"
            run = subprocess.run(["bash", "-euo", "pipefail", "-c", f'hunyuan-dit() {{ {cli} "$@"; }}\n{body}'],
                                 cwd=work, env=env, capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, f"{where} failed:\n{body}\n--- output:\n{run.stderr[-3000:]}"
        ran += 1
    assert ran >= 8


def test_node_table_lists_every_node():
    ids = set(re.findall(r'node_id="(HunyuanDiT\w+)"', "".join(p.read_text() for p in (ROOT / "nodes").glob("*.py"))))
    assert len(ids) >= 16
    listed = set(re.findall(r"^\| HunyuanDiT [^|]*\(`(HunyuanDiT\w+)`\)", README, re.M))
    assert listed == ids


def test_workflow_table_shows_every_workflow_with_its_thumbnail():
    for path in sorted((ROOT / "workflows").glob("*.json")):
        row = next((line for line in README.splitlines() if line.startswith("| ") and f"`{path.name}`" in line), None)
        assert row is not None, f"{path.name} is not in README's workflow table"
        assert f'<img src="workflows/{quote(path.stem)}.jpg"' in row  # a URL: spaces as %20
