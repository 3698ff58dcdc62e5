"""The thin HTTP/websocket layer and the ``caas`` command line."""
