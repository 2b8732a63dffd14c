"""Where audiotok meets the operating system, for every other package.

``files``: outputs written atomically under a temporary name, never overwritten unless asked;
``console``: progress drawn only where someone watches; ``allocator``: glibc settings that
make long CPU inference about twice as fast without changing a result. No torch here.
"""
