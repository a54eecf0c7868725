"""One module per outside system: sockets, cgroups, systemd, /proc, logind, containers."""
