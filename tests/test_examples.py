"""The main job: the digits example trains to > 95% validation accuracy."""

import pytest

pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")

from jaxfit.examples import digits


def test_digits_example_reaches_95_percent_validation_accuracy(capsys):
    history = digits.main(["--epochs", "15"])
    assert history.epoch == list(range(15))
    assert history.history["val_accuracy"][-1] > 0.95
    assert "val_accuracy" in capsys.readouterr().out
