"""The public surface is pinned: adding or removing a name is a decision."""

import inspect
import pathlib

import pytest

import jaxfit

PUBLIC = {
    "jaxfit": [
        "FitArgs",
        "History",
        "Model",
        "PopulationHistory",
        "PopulationTrainer",
        "Preempted",
        "StreamFitArgs",
        "TrainState",
        "Trainer",
        "callbacks",
        "data",
        "distributed",
        "evaluate_run",
        "from_equinox",
        "from_flax",
        "from_nnx",
        "load_run",
        "losses",
        "metrics",
        "run",
        "sweep",
    ],
    "jaxfit.data": ["ArrayDataset", "from_arrays"],
    "jaxfit.metrics": [
        "AUC",
        "BinaryAccuracy",
        "CategoricalAccuracy",
        "F1Score",
        "FBetaScore",
        "MeanMetricWrapper",
        "MeanState",
        "Metric",
        "MetricState",
        "Precision",
        "Recall",
        "SparseCategoricalAccuracy",
        "SparseTopKCategoricalAccuracy",
        "TopKCategoricalAccuracy",
        "binary_accuracy",
        "categorical_accuracy",
        "compute",
        "empty",
        "merge",
        "name_of",
        "names",
        "resolve",
        "sparse_categorical_accuracy",
        "sparse_top_k_categorical_accuracy",
        "top_k_categorical_accuracy",
        "update",
    ],
    "jaxfit.losses": [
        "BinaryCrossentropy",
        "CategoricalCrossentropy",
        "Hinge",
        "Huber",
        "KLDivergence",
        "LogCosh",
        "Loss",
        "LossFunctionWrapper",
        "MeanAbsoluteError",
        "MeanSquaredError",
        "SparseCategoricalCrossentropy",
        "SquaredHinge",
        "binary_crossentropy",
        "binary_crossentropy_from_logits",
        "categorical_crossentropy",
        "categorical_crossentropy_from_logits",
        "get",
        "hinge",
        "huber",
        "kl_divergence",
        "log_cosh",
        "mean_absolute_error",
        "mean_squared_error",
        "name_of",
        "names",
        "sparse_categorical_crossentropy",
        "sparse_categorical_crossentropy_from_logits",
        "squared_hinge",
    ],
    "jaxfit.callbacks": [
        "BackupAndRestore",
        "CSVLogger",
        "Callback",
        "EarlyStopping",
        "History",
        "LambdaCallback",
        "LearningRateScheduler",
        "MLflowLogger",
        "ModelCheckpoint",
        "MonitorCallback",
        "ProgressBar",
        "ReduceLROnPlateau",
        "TensorBoard",
        "TerminateOnNaN",
    ],
}


def test_public_names_are_pinned():
    assert sorted(jaxfit.__all__) == PUBLIC["jaxfit"]
    assert sorted(jaxfit.callbacks.__all__) == PUBLIC["jaxfit.callbacks"]
    assert sorted(jaxfit.data.__all__) == PUBLIC["jaxfit.data"]
    assert sorted(jaxfit.metrics.__all__) == PUBLIC["jaxfit.metrics"]
    assert sorted(jaxfit.losses.__all__) == PUBLIC["jaxfit.losses"]
    for module in (
        jaxfit,
        jaxfit.callbacks,
        jaxfit.data,
        jaxfit.losses,
        jaxfit.metrics,
    ):
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_every_public_name_is_in_the_readme():
    with open(
        pathlib.Path(__file__).resolve().parent.parent / "README.md", encoding="utf-8"
    ) as f:
        readme = f.read()
    for name in PUBLIC["jaxfit"] + PUBLIC["jaxfit.callbacks"] + PUBLIC["jaxfit.data"]:
        assert name in readme, f"{name} is public but README.md does not mention it"


PUBLIC_MODULES = (
    jaxfit,
    jaxfit.callbacks,
    jaxfit.data,
    jaxfit.distributed,
    jaxfit.losses,
    jaxfit.metrics,
)


def _public_members(cls: type):
    """``(name, object)`` of each public method, property, classmethod and
    staticmethod a user calls or overrides, defined in jaxfit (not object's,
    not a NamedTuple field's or a dataclass's generated ones)."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next(k for k in cls.__mro__ if name in vars(k))
        if not owner.__module__.startswith("jaxfit"):
            continue
        raw = inspect.getattr_static(cls, name)
        if isinstance(raw, property):
            yield name, raw
        elif isinstance(raw, (classmethod, staticmethod)) or inspect.isfunction(raw):
            yield name, getattr(cls, name)


def test_every_public_name_has_a_docstring():
    """No public name without a docstring (STYLE rule 9): the modules, everything
    in their ``__all__``, and the public members of the public classes (a member
    that overrides a documented one, a Callback hook say, inherits its docstring,
    as ``inspect.getdoc`` and the API docs do)."""
    missing = []
    for module in PUBLIC_MODULES:
        if not (module.__doc__ or "").strip():
            missing.append(module.__name__)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            if not (obj.__doc__ or "").strip():  # its own, not inherited
                missing.append(f"{module.__name__}.{name}")
            if inspect.isclass(obj):
                missing += [
                    f"{module.__name__}.{name}.{member}"
                    for member, value in _public_members(obj)
                    if not (inspect.getdoc(value) or "").strip()
                ]
    assert not missing, "public names without a docstring:\n" + "\n".join(missing)


def test_the_docstring_walk_sees_the_callback_contract():
    members = dict(_public_members(jaxfit.callbacks.Callback))
    hooks = [name for name in members if name.startswith("on_")]
    assert len(hooks) == 17 and {
        "set_trainer",
        "set_params",
        "get_state",
        "set_state",
    } <= set(members)
    assert "fit" in dict(_public_members(jaxfit.Trainer))
    assert "state" in dict(_public_members(jaxfit.Trainer))  # properties too


@pytest.mark.parametrize(
    "hook",
    [
        "on_train_batch_begin",
        "on_train_batch_end",
        "on_yield",
        "on_epoch_end",
        "on_test_end",
    ],
)
def test_the_callback_hooks_say_when_they_run_and_what_logs_hold(hook):
    doc = inspect.getdoc(getattr(jaxfit.callbacks.Callback, hook))
    assert "Called" in doc and "logs:" in doc, doc
    contract = inspect.getdoc(jaxfit.callbacks.Callback)
    for words in (
        "yield point",
        "fuse",
        "own logs",
        "val_",
        "learning_rate",
        "loss_scale",
    ):
        assert words in contract, words
