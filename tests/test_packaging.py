"""What the wheel and the ComfyUI registry zip carry: the license, the project metadata, no development files."""

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from setuptools.config.pyprojecttoml import read_configuration

import hunyuan_core as hy

ROOT = Path(__file__).resolve().parents[1]
# sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt, the license's own text
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_license_is_the_apache_2_text():
    assert hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_SHA256


def test_pyproject_metadata():
    config = read_configuration(ROOT / "pyproject.toml", expand=False)
    project = config["project"]
    assert project["version"] == hy.__version__
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert {"Repository", "Documentation", "Issues"} <= set(project["urls"])
    assert config["tool"]["comfy"]["requires-comfyui"] == ">=0.3.64"


def test_wheel_metadata_carries_the_license(tmp_path):
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tmp_path)
    shutil.copytree(ROOT / "hunyuan_core", tmp_path / "hunyuan_core", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "out").mkdir()
    run = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
                          "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))", str(tmp_path / "out")],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    info = tmp_path / "out" / run.stdout.strip().splitlines()[-1]
    metadata = (info / "METADATA").read_text(encoding="utf-8").splitlines()
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    assert not any(line.startswith("Classifier: License ::") for line in metadata)  # the expression says it
    assert any(line.startswith("Project-URL: Issues, https://") for line in metadata)
    assert (info / "licenses" / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()


@pytest.mark.parametrize("path, left_out", [
    ("tests/test_cli.py", True), ("bench/bench_speed.py", True), (".ci/run", True), ("docs/thumbnails.py", True),
    ("hunyuan_core/cli.py", False), ("nodes/sampling.py", False), ("__init__.py", False), ("LICENSE", False),
    ("pyproject.toml", False), ("README.md", False),
    ("workflows/Hunyuan-DiT - image to image.json", False),
    ("workflows/Hunyuan-DiT - image to image.jpg", False), ("docs/architecture.md", False),
    ("hunyuan_core/upscaler/tests_like_name.py", False),
])
def test_comfyignore_leaves_out_development_files(tmp_path, path, left_out):
    """Matched by git's own gitignore rules, the syntax the registry's packer reads ``.comfyignore`` in."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(ROOT / ".comfyignore", tmp_path / ".gitignore")
    run = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=tmp_path)
    assert run.returncode == (0 if left_out else 1)


def _thumbnails():
    import importlib.util

    spec = importlib.util.spec_from_file_location("thumbnails", ROOT / "docs" / "thumbnails.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_workflow_has_its_thumbnail():
    """ComfyUI 0.3.64's template browser loads ``/api/workflow_templates/<pack>/<name>.jpg`` for each workflow."""
    from PIL import Image

    workflows = sorted((ROOT / "workflows").glob("*.json"))
    assert workflows
    for path in workflows:
        with Image.open(path.with_suffix(".jpg")) as thumbnail:
            assert thumbnail.format == "JPEG" and thumbnail.size == _thumbnails().SIZE, path.name


def test_workflow_names_are_titles_that_survive_packing_and_urls():
    """The name is the template browser's title. The registry's packer reads plain ``git ls-files`` output (which
    quotes non-ASCII names) and the browser puts the name into URLs unescaped: ASCII letters, digits, spaces and
    ``-,()`` only."""
    for path in (ROOT / "workflows").glob("*.json"):
        assert re.fullmatch(r"Hunyuan-DiT - [A-Za-z0-9 ,()-]+", path.stem), path.name
        listed = subprocess.run(["git", "ls-files", "--", path.name], cwd=path.parent, capture_output=True, text=True)
        assert listed.stdout.strip() in ("", path.name)  # "" outside a git checkout (an unpacked zip)


def test_thumbnail_draws_the_nodes_and_their_wires():
    thumbnails = _thumbnails()
    assert thumbnails.node_name({"type": "HunyuanDiTVAEDecode"}) == "VAE Decode"
    assert thumbnails.node_name({"type": "HunyuanDiTCheckpointLoader"}) == "Checkpoint Loader"
    assert thumbnails.node_name({"type": "SaveImage", "title": "Save"}) == "Save"
    graph = {"nodes": [{"id": 1, "type": "A", "pos": [0, 0], "size": [200, 200]},
                       {"id": 2, "type": "B", "pos": [600, 0], "size": [200, 200]}],
             "links": [[1, 1, 0, 2, 0, "LATENT"]]}
    picture = thumbnails.render(graph, size=(400, 200))  # scale 0.46: the nodes span x 16..108 and 292..384
    assert picture.getpixel((60, 120)) == picture.getpixel((340, 120)) == thumbnails.BODY
    assert picture.getpixel((200, 120)) == thumbnails.BACKGROUND
    wire = thumbnails.WIRE_COLOURS["LATENT"]
    assert any(picture.getpixel((200, y)) == wire for y in range(200))  # the wire crosses the gap
