"""Dataset recipes: how each dataset is simulated or fetched (run as ``python -m datasets.<name>``).

Built or fetched data go to the cache (``$HYBRID_CACHE`` or ``.cache/``), never into git.
"""
