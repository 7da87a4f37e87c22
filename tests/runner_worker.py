"""One of two processes running the same YAML config (for test_runner_fit_section).

python runner_worker.py PORT RANK CONFIG WORKDIR OUT
"""

import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # runner_helpers

import jax

import jaxfit


def main(port, rank, config, workdir, out):
    jaxfit.distributed.initialize(
        f"localhost:{port}", num_processes=2, process_id=int(rank)
    )
    assert jax.process_count() == 2
    result = jaxfit.run(config, workdir)
    with open(os.path.join(out, f"result-{rank}.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "run_dir": result.run_dir,
                "history": result.history.history,
                "metrics": result.metrics,
            },
            f,
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
