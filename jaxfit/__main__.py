"""``python -m jaxfit`` is the ``jaxfit`` command."""

import sys

from jaxfit.cli import main

sys.exit(main())
