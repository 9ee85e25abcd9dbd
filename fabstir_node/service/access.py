"""Who may load a database: the access policy (``FABSTIR_ACCESS_POLICY``), as pure decisions.

``open`` (the default) is the behaviour of every earlier version: a session
loads any database whose manifest names the address the session *claims*.
``signed`` loads a database only for

* a session whose init was an ``encrypted_session_init`` and whose recovered
  ``client_address`` (the signer) is the manifest's ``owner``, ASCII case
  ignored; or
* a database reached through a capability the client proved it holds: a
  shared S5 directory key (``vectorDatabase.directoryKey``) through which the
  manifest actually resolved.  Backends that do not use directory keys never
  report one, so naming a key there proves nothing.

Everything else is ``ACCESS_DENIED``.  The loader asks :func:`decide` once
before it touches storage (a plaintext init is refused without even fetching
the manifest) and, if the answer needs the owner, again with the manifest's
owner, always before any chunk is downloaded and before a cached copy is
handed over.  No I/O here: the loader raises :func:`denial` as an error, and
the one place that turns load errors into ``loading_error`` events does the
rest.
"""

from __future__ import annotations

import enum
from typing import Any

from ..errors import ErrorCode, FabstirError

__all__ = ["Decision", "Policy", "decide", "denial", "holds_other_users_data"]


class Policy(enum.StrEnum):
    OPEN = "open"
    SIGNED = "signed"


class Decision(enum.StrEnum):
    """The outcome of the policy for one load (the ``decision`` field of ``load_audit``)."""

    OPEN = "allowed_open"  #: policy ``open``: no proof asked (the earlier behaviour)
    OWNER = "allowed_owner"  #: the session's signer owns the database
    CAPABILITY = "allowed_capability"  #: reached through a directory key the client holds
    UNSIGNED = "denied_unsigned"  #: a plaintext init named the database
    NOT_OWNER = "denied_not_owner"  #: the signer is not the database's owner

    @property
    def allowed(self) -> bool:
        return self in (Decision.OPEN, Decision.OWNER, Decision.CAPABILITY)


def same_address(a: str, b: str) -> bool:
    """Equal ignoring ASCII case only (non-ASCII never matches, as in the manifest's owner check)."""
    return a.isascii() and b.isascii() and a.lower() == b.lower()


def decide(
    policy: Policy | str, *, signer: str | None, capability: bool, owner: str | None = None
) -> Decision | None:
    """The policy's decision for one load, or None when it needs the manifest's ``owner`` first.

    ``signer`` is the ``client_address`` recovered from the ``encrypted_session_init`` that named
    the database (None after a plaintext init); ``capability`` says the database is reached
    through a directory key; ``owner`` is the manifest's owner once it is known.
    """
    if Policy(policy) is Policy.OPEN:
        return Decision.OPEN
    if capability:
        return Decision.CAPABILITY
    if signer is None:
        return Decision.UNSIGNED
    if owner is None:
        return None
    return Decision.OWNER if same_address(signer, owner) else Decision.NOT_OWNER


_DENIALS = {
    Decision.UNSIGNED: "this host loads a database only for a signed session of its owner: "
                       "use encrypted_session_init (or share the database's directory key)",
    Decision.NOT_OWNER: "this session's signer does not own the database",
}


def denial(decision: Decision) -> FabstirError | None:
    """The ``ACCESS_DENIED`` error of a refusing decision (names no address), else None."""
    message = _DENIALS.get(decision)
    return None if message is None else FabstirError(ErrorCode.ACCESS_DENIED, message)


def holds_other_users_data(settings: Any) -> bool:
    """Whether the configured storage can reach users' databases without a secret from them.

    The local store, the S5 bridge (it reads with the host's identity), the host's own S5 tree
    (``S5_SEED_PHRASE``, or the embedded portal's identity) and wallet trees all can; only native
    S5 without a host identity and without wallet trees reads nothing but shared directories.
    """
    if not settings.s5_portal_url and settings.s5_embedded_portal_dir is None:
        return True  # the local store or the bridge
    return bool(
        settings.s5_seed_phrase
        or settings.s5_embedded_portal_dir is not None
        or settings.s5_allow_wallet_identity
    )
