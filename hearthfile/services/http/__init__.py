"""The HTTP gateway (DESIGN.md section 10): ``app`` (routes), ``headers`` (pure
header logic), ``backend`` (what it needs from the node), ``node_gateway`` (the
node's side), ``server`` (the listener). Importing this package alone is cheap:
the CLI needs only ``HttpListenError``."""

from hearthfile.errors import HearthError


class HttpListenError(HearthError):
    """An HTTP address the operator asked for cannot be listened on."""
