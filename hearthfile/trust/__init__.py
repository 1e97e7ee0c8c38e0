"""Who a node trusts, and how trust is granted (DESIGN.md section 11).

``levels`` holds the one ``TrustLevel`` order (pure); ``book`` the trust book, who is
trusted at which level and by whose introduction (pure); ``storage`` keeps the book in
``<home>/trust.json`` (file I/O). This package sits beside ``bus`` and ``blobs``: it
imports nothing above ``cids``/``identity``/``config``, and the bus asks it for levels
through a plain lookup callable handed in by the node.
"""
