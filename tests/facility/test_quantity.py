"""Quantities as Kubernetes reads them: the same values as the `kubernetes` client's parser wherever it follows
apimachinery's grammar, and a refusal where it is laxer than the API server."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest
from kubernetes.utils.quantity import parse_quantity as client_parse

from aifacility.facility.quantity import parse_quantity

VALID = ["0", "2", "-1", "+3", "500m", "0.5", "1.5", ".5", "2.", "100n", "250u", "1k", "4M", "1.5G", "2T", "1P",
         "1E", "1Ki", "512Mi", "4Gi", "1.5Gi", "2Ti", "1Pi", "1Ei", "0.001", "123456789", "15360Mi"]


@pytest.mark.parametrize("text", VALID)
def test_the_same_values_as_the_kubernetes_client(text: str) -> None:
    assert parse_quantity(text) == client_parse(text)


def test_numbers_and_exponents() -> None:
    assert parse_quantity(2) == 2 and parse_quantity(0.1) == Decimal("0.1")  # as written, not 0.1000000000000000055
    assert parse_quantity("1e3") == 1000 and parse_quantity("12E-1") == Decimal("1.2")
    assert parse_quantity("1E") == Decimal("1e18")  # the suffix E (exa), not an exponent


@pytest.mark.parametrize("text", ["lots", "", "1K", "1ki", "1 Gi", " 2", "2 ", "1.2.3", "Gi", "1Gb", "--1", "1e",
                                  "1e3.5", "NaN", "Infinity", "1_000"])
def test_what_the_api_server_refuses_is_refused_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a Kubernetes quantity \(examples: 2, 500m, 4Gi"):
        parse_quantity(text)


def test_yes_and_absurd_exponents_are_refused() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(True)
    with pytest.raises(ValueError, match="out of range"):
        parse_quantity("1e999999999999")


def test_reading_the_facility_file_does_not_load_the_kubernetes_client() -> None:
    """What keeps the hub's managed services inside JupyterHub's start-up window (see quantity.py)."""
    code = ("import sys, aifacility.facility as f; f.load_facility(None); "
            "print(sorted(m for m in ('kubernetes', 'jsonschema') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
