import subprocess
import sys

import recstack.nn


def test_exports_resolve():
    for name in recstack.nn.__all__:
        assert getattr(recstack.nn, name) is not None, name


def test_nn_imports_nothing_above_it():
    # imports go one way: schema -> data -> nn -> models -> ...; nn's layers are pure tensors and
    # may only use what is below them (the schema's enums and the errors it raises)
    code = (
        "import sys, recstack.nn; "
        "print(sorted(m for m in sys.modules if m.startswith('recstack.') "
        "and not m.startswith(('recstack.nn', 'recstack.schema', 'recstack.errors'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
