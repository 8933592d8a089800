import psycopg


def test_each_test_gets_its_own_empty_database(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url) as conn:
        conn.execute("CREATE TABLE t (x int)")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
