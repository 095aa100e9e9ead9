"""The side-by-side comparison with other Python task queues (`make bench-peers`)."""
