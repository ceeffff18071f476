"""`aifacility up`: run the embedded facility (development cluster, OIDC provider, hub) on one machine."""
