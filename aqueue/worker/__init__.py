"""The worker runtime: one service per module, all children of one task group."""
