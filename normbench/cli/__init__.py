"""The `normbench` command: one module per verb (asv's layout), each with add_parser() and run()."""
