"""gRPC servicers: parse and validate, call the broker's core, convert the answer."""
