"""Registry v1's keys: where each may stand, and what each option holds.

The one table the full reader (model.py), the fast reader (fastreader.py) and the JSON
Schema's test read, so a new option is a row here, then the reading of its value: in
model.py (its checks, its file:line:col), and in fastreader.py when the generator's fast
path should vouch for registries that use it (a key it does not know only makes it defer
to the full reader). The compiled form (compiled.py) is where no table reaches: it keeps a
listen entry's options as positions in a tuple of marshal's types, so a new listen option
is a new field there and a new SHAPE. Plain tuples: the generator imports this at boot.
"""

# An option: what its value is, and whether a listen entry may set it too. Every option may
# stand in `defaults` (inherited by every unit) and in a unit (overriding it).
OPTIONS: dict[str, tuple[str, bool]] = {
    "wait": ("timespan", False),  # the longest `check` waits for the unit's own remnants
    "mode": ("mode", False),  # enforce | warn | audit
    "reuseaddr": ("bool", True),  # SO_REUSEADDR
    "reuseport": ("bool", True),  # SO_REUSEPORT
    "v6only": ("bool", True),  # IPV6_V6ONLY
    "freebind": ("bool", True),  # IP_FREEBIND
}

TOP_KEYS = ("version", "defaults", "units")
DEFAULT_KEYS = (*OPTIONS, "owner")
UNIT_KEYS = ("listen", "owner", "description", "via", *OPTIONS)
# A listen entry's own keys: its port, and whether it is a pool the service draws ports from
# on demand (TURN relays, FTP passive, RTP), of which `min-free` must be bindable (default 1).
POOL_KEYS = ("pool", "min-free")
LISTEN_KEYS = ("port", *POOL_KEYS,
               *(key for key, (_, on_listen) in OPTIONS.items() if on_listen))  # fmt: skip
BOOL_KEYS = tuple(key for key, (value, _) in OPTIONS.items() if value == "bool")

# The release that first knew a key: an older portguard refuses a registry that uses it (an
# unknown key) and its generator then guards nothing on that host. `lint --target-version`
# holds a registry to the oldest release a fleet runs.
FIRST_RELEASE = (0, 1)
SINCE: dict[str, tuple[int, int]] = {"pool": (0, 2), "min-free": (0, 2)}
