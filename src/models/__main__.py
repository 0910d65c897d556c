"""``python -m src.models``: print the model zoo table (see :mod:`src.models.zoo`)."""

from src.models.zoo import main

main()
