"""One module per pipeline job, each with a ``main()`` runnable as ``python -m jobs.<name>``."""
