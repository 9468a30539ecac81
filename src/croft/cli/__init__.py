"""The ``croft`` command: thin wrappers over the library."""
