"""Does fit_dataset overlap the host pipeline with the device step?

The host pipeline sleeps a fixed time per batch (standing in for decoding and
augmentation); the model is sized so one train step takes about as long. With
the feeder thread prefetching to the device, an epoch should take close to the
larger of the two, not their sum.

    python benchmarks/prefetch.py [--batches 40] [--sleep-ms 10]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxfit


def _model(width: int):
    rng = np.random.default_rng(0)
    params = {
        f"w{i}": jnp.asarray(
            rng.normal(size=(width, width)) / np.sqrt(width), jnp.float32
        )
        for i in range(4)
    }

    def apply(params, x):
        for i in range(4):
            x = jnp.tanh(x @ params[f"w{i}"])
        return x

    return apply, params


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--sleep-ms", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    data = [
        (
            rng.normal(size=(args.batch_size, args.width)).astype(np.float32),
            rng.normal(size=(args.batch_size, args.width)).astype(np.float32),
        )
        for _ in range(args.batches)
    ]

    def slow_pipeline():
        for batch in data:
            time.sleep(args.sleep_ms / 1000)
            yield batch

    apply, params = _model(args.width)
    trainer = jaxfit.Trainer(apply, params, optimizer=optax.adam(1e-3), loss="mse")
    trainer.fit_dataset(data, epochs=1, verbose=0)  # compile

    def timed(fn):
        start = time.perf_counter()
        fn()
        jax.block_until_ready(trainer.state.params)
        return time.perf_counter() - start

    host = timed(lambda: list(slow_pipeline()))
    device = min(
        timed(lambda: trainer.fit_dataset(data, epochs=1, verbose=0)) for _ in range(3)
    )
    both = min(
        timed(lambda: trainer.fit_dataset(slow_pipeline, epochs=1, verbose=0))
        for _ in range(3)
    )
    print(f"{'measure':<34}{'seconds':>10}")
    print(f"{'host pipeline alone':<34}{host:>10.3f}")
    print(f"{'device steps alone (fit_dataset)':<34}{device:>10.3f}")
    print(f"{'fit_dataset on the slow pipeline':<34}{both:>10.3f}")
    print(f"{'ratio to max(host, device)':<34}{both / max(host, device):>10.2f}")
    print(f"{'ratio to host + device':<34}{both / (host + device):>10.2f}")


if __name__ == "__main__":
    main()
