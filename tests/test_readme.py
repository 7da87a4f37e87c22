"""README.md stays true: its quickstart runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_quickstart_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README.md has no python block"
    assert len(blocks[0].strip().splitlines()) <= 20
    exec(compile(blocks[0], "README.md", "exec"), {})
    assert "19" in capsys.readouterr().out


def test_readme_set_up_commands_match_ci():
    text = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert '-e ".[test]"' in text and '-e ".[test]"' in ci
    assert "python -m pytest -q" in text and "python -m pytest -q" in ci
    # the device matrix: both runs, in the README and in CI
    eight = "XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu"
    assert f"{eight} .venv/bin/python -m pytest -q" in text
    assert eight in ci and ci.count("python -m pytest -q") == 2
    assert 'pip install -e ".[run]" && .venv/bin/jaxfit run digits_mlp' in text


def test_readme_annotated_config_is_the_shipped_one():
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    shipped = (README.parent / "jaxfit" / "configs" / "digits_mlp.yaml").read_text(
        encoding="utf-8")
    assert shipped in blocks


def test_readme_streaming_callback_example_runs():
    import queue

    import optax
    from conftest import linear_apply, linear_params, regression_data

    import jaxfit

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    example = next(b for b in blocks if "class StreamLogs" in b)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    sink: queue.Queue = queue.Queue()
    x, y = regression_data(n=12)
    trainer = jaxfit.Trainer(linear_apply, linear_params(), optimizer=optax.sgd(0.1),
                             loss="mse")
    trainer.fit(x, y, batch_size=4, epochs=2, yield_every="batch", verbose=0,
                callbacks=[namespace["StreamLogs"](sink)])
    items = [sink.get_nowait() for _ in range(sink.qsize())]
    assert [(e, b) for e, b, _ in items] == [(e, b) for e in range(2) for b in range(3)]
    assert all("loss" in logs for _, _, logs in items)


def test_readme_checkpoint_example_runs(tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    example = next(b for b in blocks if "BackupAndRestore(" in b)
    example = example.replace("/tmp/jaxfit-demo", str(tmp_path))
    exec(compile(example, "README.md", "exec"), {})
    epochs, best_step = map(int, capsys.readouterr().out.split())
    assert epochs == 5 and 4 <= best_step <= 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "final"]  # backup gone


def test_readme_flax_example_runs():
    import pytest

    pytest.importorskip("flax")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    example = next(b for b in blocks if "jaxfit.from_flax(Net()" in b)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["history"].epoch == [0, 1, 2]
    assert "batch_stats" in namespace["trainer"].state.model_state
