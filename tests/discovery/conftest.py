# A dedicated tenant's database, on the engine of the test (tests/tenants/conftest.py).
from tests.tenants.conftest import second_database_url

__all__ = ["second_database_url"]
