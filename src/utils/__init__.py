"""Small helpers for the entry points: config handling, logging set-up, printing."""
