"""`python -m human3r_edge` is the same CLI as `human3r-edge`."""
import sys

from human3r_edge.cli import main

sys.exit(main())
