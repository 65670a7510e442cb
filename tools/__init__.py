"""Developer tools: the sample mirror and its server, `make demo`, `make ui`. Not pipeline tasks."""
