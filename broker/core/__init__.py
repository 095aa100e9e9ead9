"""Pure broker logic: no I/O, no protobuf, time passed in."""
