"""The README's quick start and CI run the same commands."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quick_start_has_exactly_two_one_line_commands():
    commands = quick_start_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert "python -m benchmarks" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quick_start_commands()[1] in ci


def test_readme_python_snippets_run_and_check_what_they_say(local_weights, tmp_path, monkeypatch):
    """Every Python block, in order, sharing names (pretrained weights: local, not downloaded)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert any("LayerGradCam(twin, twin.layer4[-1])" in block for block in blocks)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["same_cam"] is True  # Grad-CAM on layer4[-1] is torchvision's
    assert namespace["pretrained"].num_classes == 10 and ("resnet50", "IMAGENET1K_V2") in {
        request[:2] for request in local_weights
    }
