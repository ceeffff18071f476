import pytest

from aifacility.auth.names import InvalidUsername, is_valid_username, normalize_group, normalize_username
from aifacility.facility.model import is_dns_label


@pytest.mark.parametrize(("raw", "expected"), [
    ("alice", "alice"),
    ("Alice.Smith", "alice-smith"),
    ("josé_garcía@cern.ch", "jose-garcia-cern-ch"),
    ("42cat", "u-42cat"),
    ("--bob--", "bob"),
    ("a" * 40, "a" * 32),
    ("x" * 31 + "-yz", "x" * 31),
])
def test_usernames_become_kubernetes_and_posix_names(raw: str, expected: str) -> None:
    name = normalize_username(raw)
    assert name == expected
    assert is_valid_username(name) and is_dns_label(name) and len(name) <= 32


@pytest.mark.parametrize("raw", ["", "___", "日本"])
def test_names_without_letters_or_digits_are_refused(raw: str) -> None:
    with pytest.raises(InvalidUsername, match="no letters or digits"):
        normalize_username(raw)


def test_group_prefix_is_removed() -> None:
    assert normalize_group("/physics") == "physics"
    assert normalize_group("physics") == "physics"
    assert normalize_group("/cms/analysis") == "cms/analysis"
    assert normalize_group("#ml", "#") == "ml"


def test_the_authenticator_lets_invalid_names_fail_validation_not_crash() -> None:
    from aifacility.auth import IAMAuthenticator

    auth = IAMAuthenticator(issuer="http://127.0.0.1:1", client_id="x", client_secret="y")
    assert auth.normalize_username("Alice.Smith") == "alice-smith"
    assert auth.normalize_username("___") == "___"
    assert not auth.validate_username("___")
    assert auth.validate_username("alice-smith")
