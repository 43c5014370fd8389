"""The release of qmtl-lock, in a module of its own so that light modules can read it (the
package's ``__init__`` names every public module, so importing it from them would be a cycle)."""

__version__ = "0.1.0"
