"""Image reconstruction."""
