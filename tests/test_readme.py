"""The README's library example runs as written and does what its comments say."""
import os
import re

from tests.helpers import ROOT


def test_readme_library_example_runs(tmp_path, monkeypatch, capsys):
    text = open(os.path.join(ROOT, "README.md")).read()
    example = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    monkeypatch.chdir(tmp_path)  # its log_dir is relative
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    total = eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert total["size"] == 784 * 300 + 300 * 100
    assert total["zeros"] == round(0.8 * 784 * 300) + round(0.8 * 300 * 100) == 212160
    import tfprune

    assert [w.label for w in namespace["wrappers"]] == ["hidden1", "hidden2"]
    assert not tfprune.prunable_layers(namespace["plain"])
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "logs" / "mlp"))
