"""Soak analysis: providers that read, and pure judges that decide."""
