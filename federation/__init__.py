"""The Matrix server-server protocol as a library.

Pure functions over plain data (canonical JSON, event hashes and IDs,
redaction, signing, auth rules, state resolution) with no database and no
HTTP inside; the I/O edges live in ``federation/transport/`` and the keyring.
"""
