import recstack.nn


def test_exports_resolve():
    for name in recstack.nn.__all__:
        assert getattr(recstack.nn, name) is not None, name
