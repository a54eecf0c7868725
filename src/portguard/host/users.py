"""Who a uid is, from the passwd database (NSS): names in messages, not numbers."""

import functools
import pwd


@functools.lru_cache(maxsize=1024)
def user_name(uid: int | None) -> str | None:
    """UID's login name; the number itself when the database knows no such user."""
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
