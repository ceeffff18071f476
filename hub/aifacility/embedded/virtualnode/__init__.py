"""interLink virtual nodes over the real API: pods bound to them run as batch jobs through the interLink plugin
contract (`controller.VirtualNodes`, run inside the node agent)."""
