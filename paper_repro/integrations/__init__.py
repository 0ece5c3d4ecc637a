"""Optional integrations, each behind an extra (``pip install -e '.[flower]'``): :mod:`.flower` runs an experiment on
Flower's simulation engine, :mod:`.ray` runs many experiments on a Ray cluster. The core package never imports them
at module level; :mod:`paper_repro.runner` imports one only when a run asks for it (``RunOptions(engine="flower")``,
``RunOptions(backend="ray")``)."""
