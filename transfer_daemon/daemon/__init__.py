"""The supervisor and what only it uses."""
