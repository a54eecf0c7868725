"""portguard: prove a unit's ports can be bound before it starts, and name who holds them."""

__version__ = "0.2.0"
