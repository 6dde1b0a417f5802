import sys

from geoconcept.cli import main

sys.exit(main())
