"""Claims on a shared study: no trial is claimed by two workers.

Optuna's compare-and-set from WAITING to RUNNING (``SELECT ... FOR UPDATE``)
holds on PostgreSQL and MySQL and in the journal storage, but SQLite has no row
lock: two workers could both read a trial WAITING and both set it RUNNING (CI
saw two ``jaxfit sweep`` workers build the same trial directory at once). Here
four workers, each with its own storage connection, claim 40 enqueued trials as
fast as they can; each trial must be claimed exactly once. Without the claim
lock this claimed about a quarter of the trials twice on SQLite.
"""

import collections
import threading

import pytest

optuna = pytest.importorskip("optuna", reason="sweeps run on Optuna (the sweep extra)")

from jaxfit._src.sweep import store  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
TRIALS = 40


def _claim_all(url, workers=4):
    """Each trial's number of claims, ``workers`` threads claiming one at a time."""
    made = optuna.create_study(storage=store.storage(url), study_name="s")
    for _ in range(TRIALS):
        made.enqueue_trial({}, skip_if_exists=False)
    claims = collections.Counter()
    start = threading.Barrier(workers)
    errors = []

    def work():
        try:
            own = store.storage(url)  # a worker's own connection
            study = optuna.load_study(study_name="s", storage=own)
            start.wait()
            while claimed := store.claim(study, own, 1, store.claim_lock(url)):
                claims.update(t.number for t in claimed)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return claims


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_every_trial_is_claimed_exactly_once(tmp_path, kind):
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'study.db'}"
    else:
        url = f"journal:{tmp_path / 'study.log'}"
    claims = _claim_all(url)
    assert sorted(claims) == list(range(TRIALS))
    assert {n: c for n, c in claims.items() if c != 1} == {}


def test_the_claim_lock_is_beside_an_sqlite_file_and_only_there(tmp_path):
    db = tmp_path / "study.db"
    assert store.claim_lock(f"sqlite:///{db}") == f"{db}.claim.lock"
    assert store.claim_lock("sqlite://") is None  # in memory: one process
    assert store.claim_lock("sqlite:///:memory:") is None
    assert store.claim_lock("postgresql://u@127.0.0.1:5432/db") is None
    assert store.claim_lock(f"journal:{tmp_path / 'j.log'}") is None


def test_a_lock_file_already_there_is_used_as_it_is(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    lock = tmp_path / "study.db.claim.lock"
    lock.write_text("left by an earlier sweep\n")
    claims = _claim_all(url, workers=2)
    assert sorted(claims.values()) == [1] * TRIALS
    assert lock.read_text() == "left by an earlier sweep\n"  # never truncated
