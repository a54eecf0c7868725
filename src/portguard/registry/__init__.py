"""The registry model, pure: YAML with places, claims, the kernel's overlap rules, lint."""
