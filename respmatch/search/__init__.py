"""Random structure search: starting structures and their relaxation (docs/design.md §1.3)."""
