"""The embedded OpenID Connect provider (npm `oidc-provider`) that `aifacility up` and the tests log in with."""

from aifacility.oidc.launcher import DEMO_USERS, DemoUser, EmbeddedOIDCProvider, OIDCProviderError

__all__ = ["DEMO_USERS", "DemoUser", "EmbeddedOIDCProvider", "OIDCProviderError"]
