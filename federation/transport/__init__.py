"""Federation transport: the HTTP edge of the protocol library.

Spec: ``server-server-api.md`` "Authentication" and "API standards".
``wire`` holds the pure parts (X-Matrix header, the signed request JSON);
the client and server modules beside it do the I/O.
"""
