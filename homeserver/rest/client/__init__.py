"""Client-Server API servlets (``/_matrix/client/...``)."""
