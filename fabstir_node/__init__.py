"""fabstir-node: a host daemon for the Fabstir decentralized LLM marketplace.

Clients open a WebSocket session, name a vector database they keep in S5
storage (or upload vectors directly), and search it for the rest of the
session.  The package is layered:

* ``protocol/``, ``formats/``, ``crypto/`` and ``engine/`` are free of I/O:
  pure functions and attrs classes that parse, validate, encode and search.
* ``storage/`` is the I/O edge (local directory, S5 bridge).
* ``service/`` and ``server/`` are where Trio lives: sessions, loading,
  the WebSocket server.
"""

__version__ = "0.1.0"
