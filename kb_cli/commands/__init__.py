"""One module per `kb` sub-command; see `kb_cli/main.py`."""
