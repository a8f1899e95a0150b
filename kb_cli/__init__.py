"""The `kb` command line, the top layer: it parses options and calls the core (`kb`), the harness and
registry (`reference_impls`) and the site builder (`site_builder`); none of those imports it back.

The entry point is `kb_cli.main:run`; each sub-command is one module in `kb_cli/commands/`.
"""
