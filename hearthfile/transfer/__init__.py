"""Fetching and pushing blobs (DESIGN.md section 7).

``schedule`` (pure) decides which chunk comes from which source; ``fetch``,
``push`` and ``sink`` move the bytes; ``running`` keeps the fetches under way;
``fileproto`` (pure) holds the file.* message shapes both ends speak. The names
below are the package's public face for the node and its services.
"""

from hearthfile.transfer.fetch import fetch_blob
from hearthfile.transfer.peer import Peer, Progress, ProgressFn
from hearthfile.transfer.push import PushResult, push_blob
from hearthfile.transfer.running import Transfers
from hearthfile.transfer.sink import ChunkSink

__all__ = [
    "ChunkSink",
    "Peer",
    "Progress",
    "ProgressFn",
    "PushResult",
    "Transfers",
    "fetch_blob",
    "push_blob",
]
