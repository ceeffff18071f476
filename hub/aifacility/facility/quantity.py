"""Kubernetes resource quantities ("500m", "4Gi", "2") as exact Decimals, with messages a person can act on.

The grammar is apimachinery's `resource.Quantity`: a signed decimal number and a suffix, binary (Ki ... Ei),
decimal (n, u, m, k, M ... E) or a decimal exponent (e3, E-2). It is written out here rather than taken from the
`kubernetes` client because importing that client loads its whole package, and with the test tools installed
(kubernetes-validate) jsonschema's format checkers too: seconds of start-up in every process that reads the
facility file, where JupyterHub gives its managed services ten. tests/facility/test_quantity.py holds it to the
client's parser.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SCALE = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal("1e3"),
    "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?")


def parse_quantity(value: str | int | float | Decimal) -> Decimal:
    """The quantity's exact value; ValueError with an example of what is meant otherwise."""
    if isinstance(value, bool):  # YAML's `yes`: an int to Python, never a quantity
        raise ValueError(f"'{value}' is not a Kubernetes quantity (examples: 2, 500m, 4Gi, 1.5G)")
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value))  # 0.1 as written, not its binary expansion
    m = _QUANTITY.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"'{value}' is not a Kubernetes quantity (examples: 2, 500m, 4Gi, 1.5G)")
    number, suffix = m.group(1), m.group(2) or ""
    try:
        if suffix not in _SCALE:  # a decimal exponent: e3, E-2
            return Decimal(number).scaleb(int(suffix[1:]))
        return Decimal(number) * _SCALE[suffix]
    except InvalidOperation:  # an exponent beyond what Decimal holds
        raise ValueError(f"'{value}' is out of range for a Kubernetes quantity") from None
