"""`python -m kiln.runtime.trainer`, the same as `kiln-trainer`."""

import sys

from kiln.runtime.trainer import main

sys.exit(main())
