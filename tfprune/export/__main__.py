"""`python -m tfprune.export`: see tfprune.cli.export."""
import sys

from tfprune.cli.export import console

sys.exit(console())
