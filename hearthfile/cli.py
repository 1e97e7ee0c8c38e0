"""Command line (placeholder until the store lands)."""


def main() -> int:
    return 0
