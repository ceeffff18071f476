"""The embedded facility's cluster: the real Kubernetes control plane and Kueue (built from their Go modules),
and the node agent that stands in for the kubelet where no container runtime exists."""
