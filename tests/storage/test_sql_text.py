"""SQL text handling for SQLite: placeholder rewriting and script splitting.

Pure functions, so tested directly; the same behaviour through real databases
is in test_database.py.
"""

from __future__ import annotations

import pytest

from storage.engines.sqlite import convert_placeholders, is_read_only, split_statements


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT $1", "SELECT ?1"),
        ("SELECT $10, $1, $2", "SELECT ?10, ?1, ?2"),
        ("VALUES ($1,$1)", "VALUES (?1,?1)"),
        ("SELECT '$1'", "SELECT '$1'"),
        ("SELECT 'it''s $1', $1", "SELECT 'it''s $1', ?1"),
        ('SELECT "$1" FROM t WHERE a = $2', 'SELECT "$1" FROM t WHERE a = ?2'),
        ("SELECT $1 -- and $2\n, $3", "SELECT ?1 -- and $2\n, ?3"),
        ("SELECT /* $1 ; '$2 */ $3", "SELECT /* $1 ; '$2 */ ?3"),
        ("SELECT '' || $1 || ''", "SELECT '' || ?1 || ''"),
        ("SELECT 'a\n$1\nb', $1", "SELECT 'a\n$1\nb', ?1"),
    ],
)
def test_convert_placeholders(sql: str, expected: str) -> None:
    assert convert_placeholders(sql) == expected


def test_split_statements_respects_literals_comments_and_triggers() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (x TEXT DEFAULT 'semi;colon');
    /* block; comment */ INSERT INTO a (x) VALUES ('y;z');
    CREATE TRIGGER t AFTER INSERT ON a BEGIN
        INSERT INTO a (x) VALUES ('from trigger');
        DELETE FROM a WHERE x = ';';
    END;
    SELECT 1
    """
    statements = split_statements(script)
    assert len(statements) == 4
    assert statements[0].endswith("DEFAULT 'semi;colon');")
    assert statements[1].startswith("/* block; comment */ INSERT")
    assert statements[2].startswith("CREATE TRIGGER") and statements[2].endswith("END;")
    assert statements[3] == "SELECT 1"


def test_split_statements_of_empty_script() -> None:
    assert split_statements("") == []
    assert split_statements("  \n ") == []


@pytest.mark.parametrize(
    ("sql", "read_only"),
    [
        ("SELECT 1", True),
        ("  select * from t", True),
        ("(SELECT 1) UNION (SELECT 2)", True),
        ("WITH x AS (SELECT 1) SELECT * FROM x", True),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", False),
        ("INSERT INTO t VALUES (1)", False),
        ("UPDATE t SET a = 1", False),
        ("CREATE TABLE t (a TEXT)", False),
        ("PRAGMA foreign_keys", False),
    ],
)
def test_is_read_only(sql: str, read_only: bool) -> None:
    assert is_read_only(sql) is read_only
