"""One worker per library: the process that imports it, runs the sections, and its helpers.

Each worker module has ``run(job, sections) -> version`` and the helpers its sections share.
None imports its library at module level: the driver imports these modules too.
"""
