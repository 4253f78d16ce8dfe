import sys

from crowdstat.cli import main

sys.exit(main())
