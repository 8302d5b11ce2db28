"""``python3 -m sla.convert``: the documented converter command; the converter is ``sla/checkpoint/convert.py``."""
import sys

from .checkpoint.convert import main

if __name__ == "__main__":
    sys.exit(main())
