"""Harness tests use the harness's own pytest plugin (installed as ``concord``)
and pytester (enabled for the whole suite in pyproject.toml's addopts: a
``pytest_plugins`` here would be refused by pytest outside the rootdir), to run
the plugin as another project would."""
