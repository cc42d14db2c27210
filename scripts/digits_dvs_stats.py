"""Print DigitsDVS's recording statistics, generator version 1 vs the current one.

PYTHONPATH=src python scripts/digits_dvs_stats.py [--every N]
"""

from flexsnn.data.digits_dvs import main

if __name__ == "__main__":
    raise SystemExit(main())
