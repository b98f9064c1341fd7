"""Random structure search: starting structures and their relaxation (DESIGN §1.3)."""
