"""trimitogen, mitogen and execnet side by side in one run (``benchmarks/compare.py``).

- ``cli``: the command line and the driver; ``plan``: libraries and iteration counts;
- ``model``: a section, a worker's job, samples, outcomes; ``tables``: formatting helpers;
- ``runner``: starting a library's worker process and reading its samples back;
- ``workers/``: one module per library (its process's loop and shared helpers);
- ``sections/``: one module per table (how each library is measured, and the table);
- ``remote``: throwaway users and a loopback sshd for the sections that log in;
- ``package``: the generated master-only package of the import section.

benchmarks/README.md says how to add a section.
"""
