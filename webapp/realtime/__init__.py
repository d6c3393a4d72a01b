"""Live updates to browsers over a Channels websocket: typed status messages, per-user groups."""
