"""Command line: `kb index | serve | search | suggest | eval`."""
