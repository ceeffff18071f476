"""`python -m aifacility_interlink serve ...`"""

import sys

from .cli import main

sys.exit(main())
