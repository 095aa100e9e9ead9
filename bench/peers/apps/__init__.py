"""One module per system: its worker app (the shared handler) and its `Submitter`.

Worker processes import these by name (`taskyard worker bench.peers.apps.taskyard:worker`,
`huey_consumer bench.peers.apps.huey_app.huey`, ...); the client process
(`bench/peers/client.py`) imports the one it drives. Each reads its names and addresses
from the environment the harness sets (`PEERS_*`), so one module serves every run.
"""
