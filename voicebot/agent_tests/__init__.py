"""``voicebot test``: scripted and simulated callers against the prompt, tools and settings, before a caller.

``scenarios`` reads and checks the file, ``runner`` runs each scenario as a
call of its own and grades it, ``report`` prints the table and writes JUnit.
"""
