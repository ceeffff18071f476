"""Log in through the hub's OIDC flow without a browser, as a script or a load test would."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import requests


def oidc_login(base_url: str, username: str, password: str = "demo") -> requests.Session:
    """Hub login page -> provider login form -> back to the hub; returns the session holding the hub cookie."""
    s = requests.Session()
    r = s.get(f"{base_url}/hub/oauth_login", timeout=30)
    form = re.search(r'<form[^>]*action="([^"]+/login)"', r.text)
    if form is None:
        raise RuntimeError(f"no login form at {r.url}: {r.status_code} {r.text[:300]}")
    r = s.post(urljoin(r.url, form.group(1)), data={"username": username, "password": password}, timeout=30)
    if not r.url.startswith(base_url):
        raise RuntimeError(f"login of {username} did not return to the hub: {r.url} {r.status_code} {r.text[:300]}")
    return s
