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
    import torch

    from neuralsde import ODEResNet

    # The CIFAR ResNet-20 checkpoint the README loads: random weights, saved as the public file is.
    state = {f"module.{k}".replace(".fc.", ".linear."): v for k, v in ODEResNet("resnet20").state_dict().items()}
    torch.save({"best_prec1": 91.78, "state_dict": state}, tmp_path / "resnet20-12fca82f.th")
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["same_cam"] is True  # Grad-CAM on layer4[-1] is torchvision's
    assert namespace["cifar"].arch == "resnet20" and namespace["cifar"].num_classes == 10
    assert namespace["pretrained"].num_classes == 10 and ("resnet50", "IMAGENET1K_V2") in {
        request[:2] for request in local_weights
    }
