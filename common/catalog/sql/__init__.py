"""Versioned SQL files of the catalog's own schema (``NNNN_name.sql``), applied in order."""
