"""trainer.summary(): every params and state leaf, totals equal to the leaves'
sizes and bytes, and the output shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit

PARAMS = {
    "dense": {"w": jnp.zeros((5, 4)), "b": jnp.zeros((4,))},
    "head": {"w": jnp.zeros((4, 2), jnp.bfloat16)},
}
STATE = {"mean": jnp.zeros((4,))}


def apply(params, x, *, state):
    h = x @ params["dense"]["w"] + params["dense"]["b"] - state["mean"]
    return {"logits": h @ params["head"]["w"].astype(h.dtype)}, state


def make():
    return jaxfit.Trainer(
        apply, PARAMS, state=STATE, optimizer=optax.adam(1e-3), loss="mse"
    )


def _total(tree):
    leaves = jax.tree.leaves(tree)
    return sum(leaf.size for leaf in leaves), sum(leaf.nbytes for leaf in leaves)


def test_rows_and_totals_are_the_leaves():
    printed = []
    trainer = make()
    text = trainer.summary(print_fn=printed.append)
    assert printed == [text]
    for path, leaf in jax.tree_util.tree_flatten_with_path(PARAMS)[0]:
        row = next(r for r in text.splitlines() if jax.tree_util.keystr(path) in r)
        assert str(tuple(leaf.shape)) in row and jnp.dtype(leaf.dtype).name in row
        assert row.split()[-2:] == [f"{leaf.size:,}", f"{leaf.nbytes:,}"]
    assert "state['mean']" in text
    count, nbytes = _total(trainer.params)
    s_count, s_bytes = _total(trainer.state.model_state)
    o_count, _ = _total(trainer.state.opt_state)
    lines = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    # under 1 KB the readable size is the exact byte count
    total = nbytes + s_bytes
    assert lines["Total params"] == f"{count + s_count:,} ({total:.2f} B)"
    assert lines["Trainable params"] == f"{count:,} ({nbytes:.2f} B)"
    assert lines["Non-trainable params"] == f"{s_count:,} ({s_bytes:.2f} B)"
    assert lines["Optimizer params"].startswith(f"{o_count:,} (")
    assert count == 5 * 4 + 4 + 4 * 2 and nbytes == (5 * 4 + 4) * 4 + 4 * 2 * 2


def test_output_shapes_from_an_example_or_the_last_fit():
    trainer = make()
    x = np.ones((3, 5), np.float32)
    assert "Output shape: unknown" in trainer.summary(print_fn=None)
    text = trainer.summary(x, print_fn=None)
    assert "Output shape['logits']: (None, 2) float32" in text
    trainer.fit(x, {"logits": np.zeros((3, 2), np.float32)}, verbose=0)
    assert "Output shape['logits']: (None, 2) float32" in trainer.summary(print_fn=None)


def test_bad_example_named():
    with pytest.raises(ValueError, match="x"):
        make().summary(np.ones((3, 7), np.float32), print_fn=None)
