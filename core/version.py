"""The installed edgeseg's version, in a module of its own so no part needs to import the package facade."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgeseg")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
