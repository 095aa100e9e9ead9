"""Transport security, authentication, authorization and per-identity limits.

`tokens` reads the tokens file (hashes only), `roles` is the one table of who
may call which RPC, `access` holds the caller of the running call and the
task-ownership rule, `limits` the per-identity rate and stream counters,
`tls` the server credentials, and `interceptor` ties them together in front
of every servicer. docs/security.md is the user's view of all of it.
"""
