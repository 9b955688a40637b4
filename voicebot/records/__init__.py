"""End-of-call records: made when a call ends for any reason, kept, delivered at least once.

``record`` builds one, ``outbox`` keeps and queues them, ``delivery`` sends
them, ``plan`` and ``analysis`` add a post-call analysis, ``spreadsheet``
writes them as CSV. Nothing is imported here, so that checking the settings
(``plan``) loads no metrics.
"""
