"""One argument contract: fit's and fit_dataset's keyword parameters are exactly the
fields of FitArgs / StreamFitArgs (names, order, defaults), checked once, and the
runner's fit section is made from them."""

import dataclasses
import inspect

import pytest

import jaxfit
from jaxfit._src.driver.arguments import FitArgs, StreamFitArgs


@pytest.mark.parametrize(
    "method,kind",
    [(jaxfit.Trainer.fit, FitArgs), (jaxfit.Trainer.fit_dataset, StreamFitArgs)],
)
def test_the_signature_is_the_value_object(method, kind):
    keywords = [
        (p.name, p.default)
        for p in inspect.signature(method).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    ]
    assert keywords == [(f.name, f.default) for f in dataclasses.fields(kind)]


@pytest.mark.parametrize(
    "kind,kwargs,argname",
    [
        (FitArgs, dict(batch_size=0), "batch_size"),
        (FitArgs, dict(validation_split=1.5), "validation_split"),
        (FitArgs, dict(yield_every="sometimes"), "yield_every"),
        (StreamFitArgs, dict(validation_batches=0), "validation_batches"),
        (StreamFitArgs, dict(epochs=-1), "epochs"),
    ],
)
def test_values_are_checked_at_construction(kind, kwargs, argname):
    with pytest.raises(ValueError, match=argname):
        kind(**kwargs)
    with pytest.raises(dataclasses.FrozenInstanceError):
        kind().epochs = 3  # frozen: checked once, never changed after


def test_the_runner_fit_section_is_made_from_the_contract():
    from jaxfit._src.runner import schema

    section = [f.name for f in dataclasses.fields(schema.FitConfig)]
    contract = [f.name for f in dataclasses.fields(FitArgs)] + [
        f.name
        for f in dataclasses.fields(StreamFitArgs)
        if f.name not in {g.name for g in dataclasses.fields(FitArgs)}
    ]
    assert section == [name for name in contract if name not in schema.FIT_EXCLUDED]
