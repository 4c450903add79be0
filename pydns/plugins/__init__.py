"""Plugins, one module each; every module registers itself with ``pydns.plugin.register``."""
