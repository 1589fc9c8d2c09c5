"""Harness tests use the harness's own pytest plugin (installed as ``concord``)
and pytester, to run the plugin as another project would."""

pytest_plugins = ["pytester"]
