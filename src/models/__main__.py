"""``python -m src.models``: print the model zoo table (see :mod:`src.models.zoo`);
``python -m src.models efficiency model=<name> ...``: the NTIRE efficiency protocol for one
network (see :mod:`src.models.efficiency`), with ``challenge=`` a challenge's score (see
:mod:`src.models.challenges`); ``python -m src.models choices``: the settings with
fixed values and what each network declares (see :func:`src.models.zoo.choices_markdown`);
``python -m src.models recipes``: what each ``conf/experiment`` recipe uses (see
:mod:`src.models.recipes`)."""

import sys

from src.utils.cli import run_or_explain

if sys.argv[1:2] == ["efficiency"]:
    from src.models.challenges import main as efficiency

    run_or_explain(lambda: efficiency(sys.argv[2:]))
elif sys.argv[1:2] == ["choices"]:
    from src.models.zoo import choices_markdown

    print(choices_markdown())
elif sys.argv[1:2] == ["recipes"]:
    from src.models.recipes import recipes_markdown

    print(recipes_markdown())
else:
    from src.models.zoo import main

    main()
