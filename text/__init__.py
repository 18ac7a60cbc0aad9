"""Text conventions shared by every layer; the bottom of the import graph (imports nothing of the project)."""
