"""The Redis data model: key names, atomic scripts, and the typed operations on them."""
