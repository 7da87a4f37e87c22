"""The public surface is pinned: adding or removing a name is a decision."""

import pathlib

import jaxfit

PUBLIC = {
    "jaxfit": ["History", "Model", "TrainState", "Trainer", "callbacks", "data",
               "distributed",
               "from_equinox", "from_flax", "from_nnx", "losses", "metrics", "run"],
    "jaxfit.data": ["ArrayDataset", "from_arrays"],
    "jaxfit.callbacks": ["BackupAndRestore", "CSVLogger", "Callback", "EarlyStopping",
                         "History",
                         "LambdaCallback", "LearningRateScheduler", "ModelCheckpoint",
                         "MonitorCallback",
                         "ProgressBar", "ReduceLROnPlateau", "TensorBoard",
                         "TerminateOnNaN"],
}


def test_public_names_are_pinned():
    assert sorted(jaxfit.__all__) == PUBLIC["jaxfit"]
    assert sorted(jaxfit.callbacks.__all__) == PUBLIC["jaxfit.callbacks"]
    assert sorted(jaxfit.data.__all__) == PUBLIC["jaxfit.data"]
    for module in (jaxfit, jaxfit.callbacks, jaxfit.data, jaxfit.losses, jaxfit.metrics):
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_every_public_name_is_in_the_readme():
    with open(pathlib.Path(__file__).resolve().parent.parent / "README.md", encoding="utf-8") as f:
        readme = f.read()
    for name in PUBLIC["jaxfit"] + PUBLIC["jaxfit.callbacks"] + PUBLIC["jaxfit.data"]:
        assert name in readme, f"{name} is public but README.md does not mention it"


def test_public_callables_have_docstrings():
    for module in (jaxfit, jaxfit.callbacks, jaxfit.losses, jaxfit.metrics):
        for name in module.__all__:
            obj = getattr(module, name)
            assert obj.__doc__, f"{module.__name__}.{name} has no docstring"
