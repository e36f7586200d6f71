"""`python -m demo --logdir DIR`: see demo/run_all.py."""

import sys

from demo.run_all import main

sys.exit(main())
