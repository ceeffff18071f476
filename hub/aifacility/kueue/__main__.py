"""`python -m aifacility.kueue [FACILITY]`: print the facility's Kueue objects as YAML, for `kubectl apply -f -`."""

from __future__ import annotations

import argparse
import sys

import yaml

from aifacility.facility import FacilityError, load_facility
from aifacility.kueue.render import render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aifacility.kueue", description=__doc__)
    parser.add_argument("facility", nargs="?", help="facility file (default: $AIFACILITY_FACILITY, else the demo)")
    args = parser.parse_args(argv)
    try:
        facility = load_facility(args.facility)
    except FacilityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump_all(render(facility), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
