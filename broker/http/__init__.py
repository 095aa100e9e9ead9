"""The HTTP/1.1 + JSON side of the broker: the Connect protocol over the gRPC servicers."""
