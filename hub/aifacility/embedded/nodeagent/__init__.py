"""The node agent: the kubelet of the embedded cluster's local nodes, running pods as sandboxed processes."""
