"""Population training: member i of Trainer(population=N) trains exactly as
Trainer(seed=seed + i) with its hyperparameter values (params, dropout keys,
shuffling, validation), in one compiled program."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit

RATES = [1e-3, 1e-2, 3e-1]


def _data(n=70):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    return x, (x[:, :1] > 0).astype(np.float32)


def init(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (5, 8)) * 0.3,
        "b1": jnp.zeros(8),
        "w2": jax.random.normal(k2, (8, 1)) * 0.3,
    }


def apply(params, x, *, train=False, rng=None):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    if train:  # dropout: each member's keys are its own seed's
        keep = jax.random.bernoulli(rng, 0.8, h.shape)
        h = jnp.where(keep, h / 0.8, 0.0)
    return h @ params["w2"]


def _adam(rate=1e-2):
    return optax.inject_hyperparams(optax.adam)(learning_rate=rate)


def _population(rates=RATES, **kwargs):
    return jaxfit.Trainer(
        apply,
        init,
        optimizer=_adam(),
        loss="mse",
        metrics=["mae"],
        seed=3,
        population=len(rates),
        hyperparams={"learning_rate": rates},
        **kwargs,
    )


def _single(i, rates=RATES, **kwargs):
    return jaxfit.Trainer(
        apply,
        init,
        optimizer=_adam(rates[i]),
        loss="mse",
        metrics=["mae"],
        seed=3 + i,
        **kwargs,
    )


def _close(a, b):
    jax.tree.map(
        lambda u, v: np.testing.assert_allclose(u, v, rtol=2e-5, atol=1e-6), a, b
    )


def _same_history(single, member):
    assert single.epoch == member.epoch
    assert sorted(single.history) == sorted(member.history)
    for key, values in single.history.items():
        np.testing.assert_allclose(values, member.history[key], rtol=2e-5, atol=1e-7)


def test_each_member_trains_as_its_own_trainer(compiles):
    x, y = _data()
    fit = dict(epochs=3, batch_size=16, validation_split=0.2, verbose=0)
    population = _population()
    history = population.fit(x, y, **fit)
    # one train program for all members and epochs (ragged last batch included)
    assert compiles.named("train_block") == 1
    evaluated = population.evaluate(x, y)
    predicted = population.predict(x[:7], batch_size=4)
    assert predicted.shape == (3, 7, 1)
    assert history.history["loss"][0].shape == (3,)
    for i in range(3):
        single = _single(i)
        _same_history(single.fit(x, y, **fit), history.members[i])
        _close(single.params, population.member(i).params)
        _close(single.state.opt_state, population.member(i).state.opt_state)
        got = single.evaluate(x, y)  # each member's first inference call's key
        np.testing.assert_allclose(evaluated["loss"][i], got["loss"], rtol=2e-5)
        np.testing.assert_allclose(evaluated["mae"][i], got["mae"], rtol=2e-5)
        np.testing.assert_allclose(
            predicted[i], single.predict(x[:7], batch_size=4), rtol=2e-5, atol=1e-6
        )
    np.testing.assert_allclose(population.learning_rate, np.float32(RATES), rtol=1e-7)
    # member(i) is a plain trainer that fits on from where the member was
    member = population.member(1)
    assert type(member) is jaxfit.Trainer and member.seed == 4
    member.fit(x, y, epochs=4, initial_epoch=3, batch_size=16, verbose=0)


def test_a_stateful_model_with_ragged_batches():
    # batch norm over the real rows (mask): the padding rows of the ragged last
    # batch never enter the statistics, on any device count
    def bn_apply(params, x, *, train=False, state=None, mask=None):
        h = x @ params["w"]
        if train:
            m = mask[:, None]
            mean = jnp.sum(h * m, 0) / jnp.sum(m)
            state = {"mean": 0.9 * state["mean"] + 0.1 * mean}
        else:
            mean = state["mean"]
        return (h - mean) @ params["v"], state

    def bn_init(key):
        k1, k2 = jax.random.split(key)
        return {
            "w": jax.random.normal(k1, (5, 4)),
            "v": jax.random.normal(k2, (4, 1)),
        }

    x, y = _data(45)
    common = dict(optimizer=_adam(), loss="mse", state={"mean": jnp.zeros(4)})
    population = jaxfit.Trainer(
        bn_apply,
        bn_init,
        seed=1,
        population=2,
        hyperparams={"learning_rate": [0.01, 0.1]},
        **common,
    )
    fit = dict(epochs=2, batch_size=16, validation_data=(x[:9], y[:9]), verbose=0)
    history = population.fit(x, y, **fit)
    for i, rate in enumerate([0.01, 0.1]):
        single = jaxfit.Trainer(
            bn_apply, bn_init, seed=1 + i, **{**common, "optimizer": _adam(rate)}
        )
        _same_history(single.fit(x, y, **fit), history.members[i])
        _close(single.state.model_state, population.member(i).state.model_state)


def test_early_stopping_freezes_a_member_and_the_others_go_on():
    x, y = _data()
    rates = [1e-3, 1e-2, 3e-1, 5e-3]

    def callbacks():
        return [
            jaxfit.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=1,
                min_delta=0.01,
                restore_best_weights=True,
            )
        ]

    fit = dict(epochs=8, batch_size=16, validation_split=0.2, verbose=0)
    population = _population(rates)
    (stopping,) = given = callbacks()
    history = population.fit(x, y, callbacks=given, **fit)
    lengths = [len(m.epoch) for m in history.members]
    assert len(set(lengths)) > 1 and max(lengths) == len(history.epoch) == 8
    for i in range(4):
        single = _single(i, rates)
        (alone,) = own = callbacks()
        _same_history(single.fit(x, y, callbacks=own, **fit), history.members[i])
        # the copy that acted for member i, as the user reads it after the fit
        assert stopping.member_copies[i].stopped_epoch == alone.stopped_epoch
        assert stopping.member_copies[i].best == pytest.approx(alone.best, 1e-5)
        _close(single.params, population.member(i).params)  # best weights restored
        # after a member stopped, its population logs read NaN
        stopped = history.history["val_loss"][lengths[i] :]
        assert all(np.isnan(v[i]) for v in stopped)
    best = population.best_member("val_loss")
    assert best == int(np.argmin([min(m.history["val_loss"]) for m in history.members]))


def test_a_diverging_member_is_stopped_and_checkpoints_are_per_member(tmp_path):
    x, y = _data()
    rates = [1e-2, 30.0]  # member 1 diverges

    def sgd(rate):
        return optax.inject_hyperparams(optax.sgd)(learning_rate=rate)

    def callbacks(where):
        return [
            jaxfit.callbacks.TerminateOnNaN(),
            jaxfit.callbacks.ReduceLROnPlateau(
                monitor="loss", patience=0, factor=0.5, min_delta=0.05
            ),
            jaxfit.callbacks.CSVLogger(str(where / "log.csv")),
            jaxfit.callbacks.ModelCheckpoint(str(where / "ck")),
        ]

    fit = dict(epochs=4, batch_size=16, verbose=0, yield_every="batch")
    population = jaxfit.Trainer(
        apply,
        init,
        optimizer=sgd(0.1),
        loss="mse",
        seed=3,
        population=2,
        hyperparams={"learning_rate": rates},
    )
    history = population.fit(x, y, callbacks=callbacks(tmp_path / "pop"), **fit)
    assert population.status == ["running", "done"]
    assert sorted(os.listdir(tmp_path / "pop")) == [
        ".jaxfit",
        "ck-member-0",
        "ck-member-1",
        "log-member-0.csv",
        "log-member-1.csv",
    ]
    for i, rate in enumerate(rates):
        single = jaxfit.Trainer(
            apply, init, optimizer=sgd(rate), loss="mse", seed=3 + i
        )
        mine = single.fit(x, y, callbacks=callbacks(tmp_path / f"s{i}"), **fit)
        member = history.members[i]
        assert mine.epoch == member.epoch
        assert mine.history["learning_rate"] == member.history["learning_rate"]
        finite = np.isfinite(mine.history["loss"])
        np.testing.assert_array_equal(finite, np.isfinite(member.history["loss"]))
        np.testing.assert_allclose(
            np.asarray(mine.history["loss"])[finite],
            np.asarray(member.history["loss"])[finite],
            rtol=2e-5,
        )
        loaded = jaxfit.Trainer.load(str(tmp_path / "pop" / f"ck-member-{i}"), apply)
        own = jaxfit.Trainer.load(str(tmp_path / f"s{i}" / "ck"), apply)
        assert int(loaded.state.step) == int(own.state.step)
        _close(own.params, loaded.params)  # the last finite epoch's
    assert len(history.members[1].epoch) < 4


def test_backup_and_restore_resumes_the_whole_population_exactly(tmp_path):
    x, y = _data()

    class Interrupt(jaxfit.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 3:
                raise KeyboardInterrupt

    def callbacks(*more):
        stop = jaxfit.callbacks.EarlyStopping(
            monitor="val_loss", patience=1, min_delta=0.01
        )
        return [stop, *more, jaxfit.callbacks.BackupAndRestore(str(tmp_path / "b"))]

    fit = dict(epochs=6, batch_size=16, validation_split=0.2, verbose=0)
    whole = _population()
    expected = whole.fit(x, y, callbacks=callbacks(), **fit)
    with pytest.raises(KeyboardInterrupt):
        _population().fit(x, y, callbacks=callbacks(Interrupt()), **fit)
    resumed = _population()
    history = resumed.fit(x, y, callbacks=callbacks(), **fit)
    assert [m.history for m in history.members] == [m.history for m in expected.members]
    jax.tree.map(np.testing.assert_array_equal, whole.state, resumed.state)
    assert resumed.status == whole.status


def test_loss_weights_vary_per_member():
    def two(params, x):
        h = x @ params["w"]
        return {"a": h[:, :1], "b": h[:, 1:]}

    x, _ = _data(40)
    y = {"a": x[:, :1], "b": x[:, 1:2] * 2}
    weights = [{"a": 1.0, "b": 0.0}, {"a": 0.5, "b": 2.0}]
    params = {"w": jnp.zeros((5, 2))}
    common = dict(optimizer=optax.sgd(0.05), loss="mse", seed=0)
    population = jaxfit.Trainer(
        two, params, population=2, hyperparams={"loss_weights": weights}, **common
    )
    history = population.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for i in range(2):
        single = jaxfit.Trainer(
            two, params, loss_weights=weights[i], **{**common, "seed": i}
        )
        _same_history(
            single.fit(x, y, epochs=2, batch_size=8, verbose=0), history.members[i]
        )


@pytest.mark.parametrize("how", ["accumulate", "mixed_float16", "fit_dataset"])
def test_accumulation_precision_and_streams_as_for_one_model(how):
    x, y = _data(48)
    kwargs = {"precision": "mixed_float16"} if how == "mixed_float16" else {}
    population = _population(RATES[:2], **kwargs)
    singles = [_single(i, **kwargs) for i in range(2)]
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 48, 16)]
    steps = 2 if how == "accumulate" else 1

    def run(t):
        if how == "fit_dataset":  # the same stream for every member
            return t.fit_dataset(batches, epochs=2, verbose=0)
        return t.fit(x, y, epochs=2, batch_size=8, accumulate_steps=steps, verbose=0)

    history = run(population)
    for i, single in enumerate(singles):
        _same_history(run(single), history.members[i])
        _close(single.params, population.member(i).params)


def test_members_are_split_across_devices_when_their_number_allows():
    devices = len(jax.devices())
    population = _population([1e-2] * 8)
    sharding = jax.tree.leaves(population.state.params)[0].sharding
    if devices == 8:  # each device holds one whole member
        assert sharding.spec == jax.sharding.PartitionSpec("data")
    x, y = _data(40)
    history = population.fit(x, y, epochs=1, batch_size=8, verbose=0)
    single = _single(5, [1e-2] * 8)
    _same_history(
        single.fit(x, y, epochs=1, batch_size=8, verbose=0), history.members[5]
    )


def test_what_a_population_refuses_before_anything_runs():
    params = {"w": jnp.zeros((5, 1))}
    linear = lambda p, x: x @ p["w"]  # noqa: E731
    with pytest.raises(ValueError, match="hyperparams"):
        jaxfit.Trainer(
            linear,
            params,
            optimizer=_adam(),
            loss="mse",
            hyperparams={"learning_rate": [1]},
        )
    with pytest.raises(ValueError, match="population"):
        jaxfit.Trainer(linear, params, optimizer=_adam(), loss="mse", population=0)
    with pytest.raises(
        ValueError, match=r"hyperparams\['learning_rate'\].*sequence of 3"
    ):
        jaxfit.Trainer(
            linear,
            params,
            optimizer=_adam(),
            loss="mse",
            population=3,
            hyperparams={"learning_rate": [1, 2]},
        )
    with pytest.raises(ValueError, match=r"injects.*learning_rate"):
        jaxfit.Trainer(
            linear,
            params,
            optimizer=_adam(),
            loss="mse",
            population=2,
            hyperparams={"momentum": [1, 2]},
        )
    with pytest.raises(ValueError, match="inject_hyperparams"):
        jaxfit.Trainer(
            linear,
            params,
            optimizer=optax.adam(1e-3),
            loss="mse",
            population=2,
            hyperparams={"learning_rate": [1, 2]},
        )
    scheduled = optax.inject_hyperparams(optax.adam)(
        learning_rate=optax.exponential_decay(1e-3, 10, 0.9)
    )
    with pytest.raises(ValueError, match="not a schedule"):
        jaxfit.Trainer(
            linear,
            params,
            optimizer=scheduled,
            loss="mse",
            population=2,
            hyperparams={"learning_rate": [1, 2]},
        )
    population = jaxfit.Trainer(
        linear, params, optimizer=_adam(), loss="mse", population=2
    )
    x, y = _data(8)
    with pytest.raises(ValueError, match=r"train_on_batch.*member"):
        population.train_on_batch(x, y)
    logger = jaxfit.callbacks.MLflowLogger()
    before = jax.tree.map(np.asarray, population.state)
    with pytest.raises(ValueError, match="MLflowLogger"):
        population.fit(x, y, callbacks=[logger], verbose=0)
    jax.tree.map(np.testing.assert_array_equal, before, population.state)
    with pytest.raises(ValueError, match="optimizer"):
        population.compile(optimizer=optax.sgd(0.1))


def test_save_and_restore_a_population_and_load_refuses_its_checkpoint(tmp_path):
    x, y = _data()
    population = _population(RATES[:2])
    population.fit(x, y, epochs=1, batch_size=16, verbose=0)
    text = population.summary(x[:2], print_fn=None)
    assert "a population of 2 members" in text and "(2, 5, 8)" in text
    assert "Total params: 112 " in text and "Output shape: (None, 1)" in text
    path = population.save(tmp_path / "ckpt")
    again = _population(RATES[:2])
    again.restore(path)
    _close(population.state.params, again.state.params)
    _close(population.state.opt_state, again.state.opt_state)
    with pytest.raises(ValueError, match="population of 2 members"):
        jaxfit.Trainer.load(path, apply, optimizer=_adam(), loss="mse")
    single = population.member(1)
    loaded = jaxfit.Trainer.load(single.save(tmp_path / "one"), apply)
    _close(loaded.predict(x), population.predict(x)[1])


def test_members_may_share_a_seed_given_in_hyperparams():
    x, y = _data()
    rates = RATES[:2]
    population = jaxfit.Trainer(
        apply,
        init,
        optimizer=_adam(),
        loss="mse",
        seed=1,
        population=2,
        hyperparams={"learning_rate": rates, "seed": [4, 4]},
    )
    fit = dict(epochs=2, batch_size=16, validation_split=0.2, verbose=0)
    history = population.fit(x, y, **fit)
    predicted = population.predict(x[:5])
    for i in range(2):  # each as Trainer(seed=4) with its rate: dropout, order
        single = jaxfit.Trainer(
            apply, init, optimizer=_adam(rates[i]), loss="mse", seed=4
        )
        _same_history(single.fit(x, y, **fit), history.members[i])
        _close(single.params, population.member(i).params)
        _close(single.predict(x[:5]), predicted[i])
        assert population.member_seed(i) == population.member(i).seed == 4
    with pytest.raises(ValueError, match=r"hyperparams\['seed'\]\[1\]"):
        jaxfit.Trainer(
            apply, init, loss="mse", population=2, hyperparams={"seed": [0, -1]}
        )
