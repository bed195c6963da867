"""Import-only stand-in for the composition_interfaces message package (see ../README.md)."""
