"""Ctrl-C during ``import jaxfit`` is never lost: whenever it lands, the import
ends with KeyboardInterrupt (without jaxfit's hold, a SIGINT inside jaxlib's
garbage-collection callback was swallowed and ``jaxfit run`` trained to the end,
and one inside a C extension's initialisation became an ImportError)."""

import subprocess
import sys
import time

import pytest

PROGRAM = "import jaxfit.cli\nprint('imported', flush=True)\n"


@pytest.mark.parametrize("delay", [0.15, 0.3, 0.5])
def test_ctrl_c_during_the_import_interrupts_it(delay):
    process = subprocess.Popen(
        [sys.executable, "-c", PROGRAM],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    process.send_signal(2)
    out, err = process.communicate(timeout=60)
    if out:  # the import was already done: Ctrl-C landed after it
        pytest.skip(f"the import finished within {delay} s on this machine")
    assert process.returncode == -2, err
    assert err.strip().splitlines()[-1] == "KeyboardInterrupt", err
    assert "ImportError" not in err and "Exception ignored" not in err, err


def test_the_import_leaves_pythons_handler():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import signal, jaxfit; "
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == "True"
