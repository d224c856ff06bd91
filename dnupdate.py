"""dnupdate: the one import name of the repository's ``cli/`` and ``engine/`` folders.

In a checkout this file sits beside ``cli/`` and ``engine/``; in the installed wheel it is
``dnupdate/__init__.py`` with them inside. Either way ``dnupdate.engine`` and ``dnupdate.cli``
are the folders next to it: a module that defines ``__path__`` is a package to the import system.
Nothing is installed at the top level of site-packages except ``dnupdate``.
"""

import os

__path__ = [os.path.dirname(os.path.abspath(__file__))]
