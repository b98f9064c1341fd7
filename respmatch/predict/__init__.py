"""``respmatch predict``: the structure of a formula, from a search → distinct → physics funnel.

The stages live in their own modules (``pipeline`` runs them); ``respmatch.predict`` at the top
of the package is the function ``pipeline.predict``, so import these modules by their full name
(``from respmatch.predict.shortlist import ...``).  This file imports nothing: the report reads a
run's stage records (``predict.records``, ``predict.funnel``) without pulling in the pipeline
that writes reports.
"""
