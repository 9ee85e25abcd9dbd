"""Native S5 storage, the I/O-free part (s5.md).

Pure functions and attrs classes only -- no sockets, no files, no Trio:

* :mod:`.multibase`, :mod:`.cid` -- identifiers; :func:`.cid.verify_blob`;
* :mod:`.keys`, :mod:`.seed`, :mod:`.identity` -- key derivation, whose tree;
* :mod:`.registry` -- signed registry entries;
* :mod:`.cborx`, :mod:`.dirv1`, :mod:`.hamt` -- directory blobs;
* :mod:`.encryption` -- root-directory and per-file XChaCha20-Poly1305;
* :mod:`.content` -- what ``fs.put`` stores and ``fs.get`` returns;
* :mod:`.resolve` -- a sans-io path resolver that asks for entries and blobs;
* :mod:`.writer` -- builds blobs and signed entries the way s5.js writes them.
"""
