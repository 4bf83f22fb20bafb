"""The top layer, where people and CI meet airagent: the Python client, the CLI, the status display, the demo."""
