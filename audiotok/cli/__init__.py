"""The ``audiotok`` command line (click)."""
