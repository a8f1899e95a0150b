"""One module per `kb` sub-command; see `kb/cli.py`."""
