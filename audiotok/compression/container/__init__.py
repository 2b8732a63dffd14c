"""On-disk formats: the ``.atok`` container, its entropy coders, and ``.ecdc`` interoperability.

See docs/FORMAT.md for the normative description of ``.atok``.
"""
