"""`aifacility up`: run the embedded facility (Kubernetes control plane, Kueue, node agent, OIDC provider, hub)
on one machine."""
