"""The keys of inference calls: one per call, derived from the trainer's seed.

Each ``evaluate``, ``evaluate_dataset``, ``predict``, ``predict_dataset``,
``test_on_batch`` and ``predict_on_batch`` call starts a key chain of its own:
the ``n``-th such call of a trainer starts from a key derived from its seed and
``n`` (a host-side counter). The training rng (``trainer.state.rng``) is neither
read nor advanced, so a fit's results never depend on how often one predicted
in between; the same seed and the same calls in the same order give the same
keys. Within a call each batch splits its key off the chain
(``core.inference_steps``). Validation inside ``fit`` starts its chain from the
training rng at that point instead (fresh at each validation run, and a pure
function of the fit; it does not advance the training rng either).

The key is made by one small jitted call from an explicitly placed host array:
no implicit transfer (``jax.transfer_guard("disallow")`` allows it) and no sync.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

_STREAM_TAG = 0x1A7  # the inference calls' stream, apart from the training rng's


@jax.jit
def _derive(words: jax.Array) -> jax.Array:
    """``words`` = ``[seed low 32 bits, seed high 32 bits, call number]``."""
    key = jax.random.PRNGKey(words[0])
    key = jax.random.fold_in(key, words[1])
    key = jax.random.fold_in(key, _STREAM_TAG)
    return jax.random.fold_in(key, words[2])


_derive_many = jax.jit(jax.vmap(_derive))


class InferenceKeys:
    """The host-side counter of a trainer's inference calls."""

    def __init__(self) -> None:
        self.calls = 0

    def next(self, seed: int, like: Any, offsets: Any = None) -> Any:
        """The key of the next call, placed like ``like`` (the state's rng);
        ``offsets`` (a population's): member ``i``'s as the key of seed
        ``seed + offsets[i]``'s trainer."""
        members = len(offsets) if offsets else 0
        seeds = [int(seed) + o for o in offsets] if offsets else [int(seed)]
        words = np.array(
            [
                [s & 0xFFFFFFFF, (s >> 32) & 0xFFFFFFFF, self.calls & 0xFFFFFFFF]
                for s in seeds
            ],
            np.uint32,
        )
        self.calls += 1
        if members:
            return _derive_many(jax.device_put(words, like.sharding))
        return _derive(jax.device_put(words[0], like.sharding))


def with_call_key(trainer: Any) -> Any:
    """``trainer.state`` with its rng replaced by the next inference call's key
    (the trainer's state itself is left as it is)."""
    keys = trainer.__dict__.get("_inference_keys")
    if keys is None:
        keys = trainer.__dict__["_inference_keys"] = InferenceKeys()
    state = trainer.state
    offsets = getattr(trainer, "_member_offsets", None)
    return state.replace(rng=keys.next(trainer.seed, state.rng, offsets))
