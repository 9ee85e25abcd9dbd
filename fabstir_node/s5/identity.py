"""Whose tree: S5 identities and the keys of every directory (s5.md §3.1, §3.9).

Three ways in, all ending in :class:`DirectoryKeys`:

* a seed phrase (the host's own ``S5_SEED_PHRASE``): :meth:`S5Identity.from_phrase`,
  then :meth:`S5Identity.root` -- full read and write access;
* the identity the Fabstir SDK derives from a wallet address and chain id
  (:meth:`S5Identity.from_wallet`).  Anyone who knows the address can compute
  it, so callers must enable it explicitly;
* a directory public key shared by the user (s5.js ``getPublicDirectoryKey``):
  :meth:`DirectoryKeys.from_public_key` -- read-only, that subtree only.

Derivation (one BLAKE3 tweak per step, ``dHI`` = derive_hash_int)::

    seedBytes = blake3(entropy16); main = dHI(seedBytes, 0)
    privateSub = dHI(dHI(main, 64), 0); fsRootKey = dHI(privateSub, 67)
    rootWriteKey = dHI(fsRootKey, 1); rootEncryptionKey = dHI(rootWriteKey, 1)
    child writeKey = derive_hash_string(parentWriteKey, utf8(name))
    pk = 0xed || ed25519_public(writeKey)

Secrets are ``repr=False`` and never appear in messages.
"""

from __future__ import annotations

import hashlib

import attrs

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.s5 import multibase
from fabstir_node.s5.cid import MKEY_ED25519, blake3_hash
from fabstir_node.s5.keys import derive_hash_int, derive_hash_string, ed25519_public_key, multikey
from fabstir_node.s5.seed import entropy_to_phrase, phrase_to_entropy

__all__ = [
    "SDK_SEED_DOMAIN",
    "DirectoryKeys",
    "S5Identity",
    "directory_cid",
    "fs5_uri",
    "sdk_wallet_entropy",
    "split_path",
]

#: Fabstir SDK ``SEED_DOMAIN_SEPARATOR`` (packages/sdk-core/src/utils/s5-seed-derivation.ts).
SDK_SEED_DOMAIN = "fabstir-s5-seed-v2.1"

# s5.js identity.ts tweaks
_MAIN = 0
_PUBLIC = 1
_SIGNING = 2
_PRIVATE_DATA = 64
_PORTAL_ACCOUNTS = 65
_HIDDEN_DB = 66
_FILE_SYSTEM = 67
_KEY_ROTATION_INDEX = 0
CID_TYPE_FS5_DIRECTORY = 0x5D
CID_TYPE_ENCRYPTED_MUTABLE = 0x5E
#: s5.js writes 0xa6 for XChaCha20-Poly1305 here; the spec says 0xe4 (s5.md §1.3).
ENCRYPTION_ALGORITHM_XCHACHA20POLY1305 = 0xA6
#: FS5 computes dHI(writeKey, 0x5e) for every directory but uses it nowhere.
UNUSED_DIRECTORY_TWEAK = 0x5E


def _check_key(value: bytes) -> None:
    if len(value) != 32:
        raise FabstirError(ErrorCode.INVALID_SESSION_KEY, "an S5 key must be 32 bytes")


def split_path(path: str) -> list[str]:
    """Path segments the way s5.js ``normalizePath`` sees them (empty ones dropped)."""
    if not isinstance(path, str):
        raise FabstirError(ErrorCode.INVALID_PATH, "path must be text")
    return [segment for segment in path.split("/") if segment]


@attrs.frozen
class DirectoryKeys:
    """The keys of one FS5 directory.

    ``public_key`` is the 33-byte registry key (``0xed || pk32``).  A reader
    that has only the public key has ``write_key = None``; only the root has
    an ``encryption_key`` (children are stored unencrypted, s5.md §3.4).
    """

    public_key: bytes = attrs.field(converter=bytes)
    write_key: bytes | None = attrs.field(default=None, repr=False)
    encryption_key: bytes | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_write_key(cls, write_key: bytes, encryption_key: bytes | None = None) -> DirectoryKeys:
        _check_key(write_key)
        return cls(multikey(ed25519_public_key(write_key)), bytes(write_key), encryption_key)

    @classmethod
    def from_public_key(cls, public_key: bytes) -> DirectoryKeys:
        """Read-only keys from a shared key: 32 bytes (``getPublicDirectoryKey``) or 33 with ``0xed``."""
        public_key = bytes(public_key)
        if len(public_key) == 32:
            public_key = multikey(public_key)
        if len(public_key) != 33 or public_key[0] != MKEY_ED25519:
            raise FabstirError(
                ErrorCode.INVALID_SESSION_KEY, "a directory key must be a 32-byte Ed25519 public key"
            )
        return cls(public_key)

    @property
    def public_key32(self) -> bytes:
        """The bare key, as s5.js ``getPublicDirectoryKey`` returns it."""
        return self.public_key[1:]

    def child(self, name: str) -> DirectoryKeys:
        """Keys of the sub-directory ``name``; needs the write key (derivation is one-way)."""
        if self.write_key is None:
            raise FabstirError(
                ErrorCode.INVALID_PATH, "child keys cannot be derived without the directory's write key"
            )
        return DirectoryKeys.from_write_key(derive_hash_string(self.write_key, name.encode("utf-8")))

    def descend(self, path: str) -> DirectoryKeys:
        """Keys of the directory at ``path`` below this one (``""`` is this one)."""
        keys = self
        for segment in split_path(path):
            keys = keys.child(segment)
        return keys


@attrs.frozen
class S5Identity:
    """An S5 user identity, held as its 16 bytes of seed entropy."""

    entropy: bytes = attrs.field(converter=bytes, repr=False)

    def __attrs_post_init__(self) -> None:
        if len(self.entropy) != 16:
            raise FabstirError(ErrorCode.S5_INVALID_SEED_PHRASE, "seed entropy must be 16 bytes")

    @classmethod
    def from_phrase(cls, phrase: str) -> S5Identity:
        """From a 15-word seed phrase (e.g. ``S5_SEED_PHRASE``)."""
        return cls(phrase_to_entropy(phrase))

    @classmethod
    def from_wallet(cls, address: str, chain_id: int) -> S5Identity:
        """The identity the Fabstir SDK derives from a wallet address (``generateS5SeedFromAddress``)."""
        return cls(sdk_wallet_entropy(address, chain_id))

    @property
    def phrase(self) -> str:
        return entropy_to_phrase(self.entropy)

    @property
    def seed_bytes(self) -> bytes:
        return blake3_hash(self.entropy)

    @property
    def main_seed(self) -> bytes:
        return derive_hash_int(self.seed_bytes, _MAIN)

    @property
    def public_seed(self) -> bytes:
        return derive_hash_int(self.main_seed, _PUBLIC)

    @property
    def public_sub_seed(self) -> bytes:
        return derive_hash_int(self.public_seed, _KEY_ROTATION_INDEX)

    @property
    def private_data_seed(self) -> bytes:
        return derive_hash_int(self.main_seed, _PRIVATE_DATA)

    @property
    def private_sub_seed(self) -> bytes:
        return derive_hash_int(self.private_data_seed, _KEY_ROTATION_INDEX)

    @property
    def signing_key_seed(self) -> bytes:
        return derive_hash_int(self.public_sub_seed, _SIGNING)

    @property
    def fs_root_key(self) -> bytes:
        return derive_hash_int(self.private_sub_seed, _FILE_SYSTEM)

    @property
    def portal_account_seed(self) -> bytes:
        return derive_hash_int(self.private_sub_seed, _PORTAL_ACCOUNTS)

    @property
    def hidden_db_key(self) -> bytes:
        return derive_hash_int(self.private_sub_seed, _HIDDEN_DB)

    def root(self) -> DirectoryKeys:
        """Keys of the (encrypted) root directory."""
        root_write_key = derive_hash_int(self.fs_root_key, 1)
        return DirectoryKeys.from_write_key(root_write_key, derive_hash_int(root_write_key, 1))

    def directory(self, path: str) -> DirectoryKeys:
        """Keys of the directory at ``path`` (e.g. ``home/vector-databases/0xabc/docs``)."""
        return self.root().descend(path)


def sdk_wallet_entropy(address: str, chain_id: int) -> bytes:
    """SHA-256(lowercase(address) + "fabstir-s5-seed-v2.1" + decimal chain id)[:16]."""
    if not isinstance(address, str) or isinstance(chain_id, bool) or not isinstance(chain_id, int):
        raise FabstirError(ErrorCode.INVALID_MESSAGE, "wallet address and chain id are required")
    message = (address.lower() + SDK_SEED_DOMAIN + str(chain_id)).encode("utf-8")
    return hashlib.sha256(message).digest()[:16]


def directory_cid(keys: DirectoryKeys) -> bytes:
    """FS5 directory CID: ``5d ed pk`` or, with an encryption key, ``5d 5e a6 key pk33``."""
    if keys.encryption_key is None:
        return bytes([CID_TYPE_FS5_DIRECTORY]) + keys.public_key
    return (
        bytes([CID_TYPE_FS5_DIRECTORY, CID_TYPE_ENCRYPTED_MUTABLE, ENCRYPTION_ALGORITHM_XCHACHA20POLY1305])
        + keys.encryption_key
        + keys.public_key
    )


def fs5_uri(keys: DirectoryKeys, *, with_write_key: bool = False) -> str:
    """``fs5://<b-base32 directory CID>``, optionally with ``write:<u-base64url(00 || writeKey)>@``.

    The write form is a secret (it grants write access); never log it.
    """
    host = multibase.encode(directory_cid(keys), "b")
    if not with_write_key:
        return f"fs5://{host}"
    if keys.write_key is None:
        raise FabstirError(ErrorCode.INVALID_PATH, "no write key for this directory")
    secret = multibase.encode(bytes(1) + keys.write_key, "u")
    return f"fs5://write:{secret}@{host}"
