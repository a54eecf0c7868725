"""The free path of `portguard check`, from builtin modules only: the floor of the tree.

`check` runs before every guarded start at every boot, and almost always finds its ports
free. This package proves exactly that case and nothing else (check.py): it reads the
registry's files and proves them root's (trust.py), finds their compiled form by a hash of
their contents, so it can never be stale (cache.py), trial-binds the unit's precomputed
binds as the identity and with the socket options the drop-in names (binds.py), and exits
0. Anything else -- a busy port, a cache miss, an unregistered unit, unusual flags, unsafe
files -- returns None, and the full implementation decides and reports.

Importing argparse, json or dataclasses alone would cost more than the interpreter's own
start; even `os` (pure Python, with posixpath and _collections_abc) costs a tenth of it under
`-S`, so the few path operations needed are written over the builtin `posix` (trust.py).
Each module is one more import at every start (about 0.1 ms), so there are five (nat.py:
whether a NAT rule may take the port, DESIGN rule 5). The rest of portguard calls down
into them for the same work (the trial bind, the trust walk, the compiled form), so each
exists once; nothing here imports anything of ours but its siblings.
"""
