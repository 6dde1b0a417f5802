"""`python -m geoconcept.train --config FILE [--set key=value ...]` (also under torchrun)."""

import sys

from geoconcept.errors import GeoconceptError
from geoconcept.train.main import main

try:
    sys.exit(main(sys.argv[1:]))
except GeoconceptError as exc:
    print(f"geoconcept train: error: {exc}", file=sys.stderr)
    sys.exit(2)
