"""The pytest plugin of pydns (entry point ``pytest11``)."""
