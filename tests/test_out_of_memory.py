"""Out of device memory: a train step larger than the device is refused before it
runs (the device's limit set by a seam: XLA:CPU reports none), and XLA's run-time
RESOURCE_EXHAUSTED (a real one: XLA:CPU fails to allocate a terabyte at once)
becomes jaxfit's one-line error with the trainer left usable, its state the one
before the failing step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit
from jaxfit._src.driver import memory

X, Y = regression_data(n=64)


def _trainer(apply=linear_apply):
    return jaxfit.Trainer(
        apply, linear_params(), optimizer=optax.adam(0.01), loss="mse"
    )


def _same(a, b):
    return all(
        np.array_equal(np.asarray(u), np.asarray(v))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _one_line(error):
    text = str(error)
    assert "\n" not in text, text
    return text


def test_a_train_step_larger_than_the_device_is_refused_before_any_step(
    monkeypatch,
):
    monkeypatch.setattr(memory, "LIMIT_OVERRIDE", 512)  # a 512-byte device
    trainer = _trainer()
    before, ran = trainer.state, []
    with pytest.raises(MemoryError) as info:
        trainer.fit(
            X,
            Y,
            batch_size=16,
            verbose=0,
            callbacks=[{"on_train_batch_end": lambda batch, logs: ran.append(batch)}],
        )
    text = _one_line(info.value)
    assert text.startswith("fit: the train step needs "), text
    assert "batch_size=16" in text and "KiB of device memory" in text, text
    assert "more than the device's 512 bytes" in text, text
    assert "smaller batch_size" in text, text  # how to fix it
    assert ran == []
    assert trainer.state is before  # nothing ran, nothing was donated
    assert int(trainer.state.step) == 0
    monkeypatch.setattr(memory, "LIMIT_OVERRIDE", None)
    trainer.fit(X, Y, batch_size=16, verbose=0)  # still usable
    assert int(trainer.state.step) == 4


def test_a_train_step_that_fits_runs_and_the_check_compiles_nothing_more(
    monkeypatch, compiles
):
    plain = _trainer()
    compiles.reset()
    plain.fit(X, Y, batch_size=16, epochs=2, verbose=0, validation_split=0.25)
    unchecked = compiles.count
    checked = []
    measure = memory.needed
    monkeypatch.setattr(memory, "LIMIT_OVERRIDE", 2**40)
    monkeypatch.setattr(
        memory, "needed", lambda executable: checked.append(1) or measure(executable)
    )
    trainer = _trainer()
    compiles.reset()
    trainer.fit(X, Y, batch_size=16, epochs=2, verbose=0, validation_split=0.25)
    assert checked == [1]  # the fit's one train program, measured once
    assert compiles.count == unchecked
    assert compiles.named("train_block") == 1
    assert _same(trainer.params, plain.params)


def _huge_when(flag):
    """An apply whose train step (and eval step, with ``flag["eval"]``) allocates
    a terabyte per row when ``x``'s batch has at least ``flag["rows"]`` rows
    (while ``flag["on"]``)."""

    def apply(params, x, *, train):
        out = linear_apply(params, x)
        if (train or flag.get("eval")) and flag["on"] and x.shape[0] >= flag["rows"]:
            # a terabyte per row: more than any one device here can allocate
            big = jnp.broadcast_to(x[:, :1, None], (x.shape[0], 2**22, 2**16))
            big = jnp.sort(big * params["w"][0, 0], axis=2)
            out = out + 0.0 * big[:, -1, -1:]
        return out

    return apply


def test_resource_exhausted_at_run_time_leaves_the_state_before_the_step():
    trainer = _trainer(_huge_when({"on": True, "rows": 16}))
    before = jax.tree.map(np.asarray, trainer.params)
    with pytest.raises(MemoryError) as info:
        trainer.fit(X, Y, batch_size=16, epochs=2, verbose=0)
    text = _one_line(info.value)
    assert text.startswith("fit: the device ran out of memory"), text
    assert "RESOURCE_EXHAUSTED" in text and "batch_size=16" in text, text
    assert "smaller batch_size" in text and "trainer.state is the state" in text
    assert isinstance(info.value.__cause__, jax.errors.JaxRuntimeError)
    # usable: the state before the failing step, readable, and it trains on
    assert int(trainer.state.step) == 0
    assert _same(trainer.params, before)
    assert set(trainer.evaluate(X, Y, batch_size=16)) == {"loss"}
    trainer.fit(X, Y, batch_size=8, epochs=2, verbose=0)  # a smaller batch fits
    reference = _trainer()
    reference.fit(X, Y, batch_size=8, epochs=2, verbose=0)
    assert _same(trainer.state, reference.state)


def _stream(sizes):
    def batches():
        start = 0
        for size in sizes:
            yield X[start : start + size], Y[start : start + size]
            start += size

    return batches


def test_a_stream_step_that_runs_out_mid_fit_puts_back_the_state_before_it():
    # batches of 8 fit; the first batch of 32 (a new program) exhausts memory
    trainer = _trainer(_huge_when({"on": True, "rows": 32}))
    with pytest.raises(MemoryError) as info:
        trainer.fit_dataset(_stream([8, 8, 8, 32]), verbose=0, yield_every="batch")
    text = _one_line(info.value)
    assert text.startswith("fit_dataset: the device ran out of memory"), text
    assert "Yield batches smaller than 32" in text, text
    reference = _trainer()
    reference.fit_dataset(_stream([8, 8, 8]), verbose=0, yield_every="batch")
    assert int(trainer.state.step) == 3
    assert _same(trainer.params, reference.params)
    assert _same(trainer.state.opt_state, reference.state.opt_state)


def test_an_evaluation_that_runs_out_leaves_the_state_as_it_was():
    trainer = _trainer(_huge_when({"on": True, "rows": 16, "eval": True}))
    trainer.fit(X, Y, batch_size=8, verbose=0)
    before = jax.tree.map(np.asarray, trainer.state)
    with pytest.raises(MemoryError) as info:
        trainer.evaluate(X, Y, batch_size=16)
    text = _one_line(info.value)
    assert text.startswith("evaluation: the device ran out of memory"), text
    assert "batch_size=16" in text and "trainer.state is unchanged" in text, text
    assert _same(trainer.state, before)
    assert set(trainer.evaluate(X, Y, batch_size=8)) == {"loss"}
