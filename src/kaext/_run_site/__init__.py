"""The directory ``python -m kaext.run`` puts first on PYTHONPATH: it holds only ``sitecustomize``."""
